/* fakefe-smoke: drive any vhost-user-blk back-end through fakefe.
 *
 *   fakefe-smoke SOCKET [-r REGIONS] [-q QUEUES] [-e] [-n QSIZE]
 *
 * Negotiates, prints features and config space, then on every queue writes
 * patterns in several descriptor layouts and reads them back; flush, GET_ID,
 * and (if offered) WRITE_ZEROES and DISCARD.  Exit 0 if everything checked
 * out, 1 otherwise.  Writes to the first MiBs of the device: use a scratch
 * image.
 */
#include "fakefe.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; \
	fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static void usage(void)
{
	fprintf(stderr, "usage: fakefe-smoke SOCKET [-r REGIONS] [-q QUEUES] [-e] [-n QSIZE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct ffe_layout layouts[] = {
		{ FFE_L_NATURAL, 0, false },
		{ FFE_L_NATURAL, 4096, false },
		{ FFE_L_NATURAL, 512, true },
		{ FFE_L_MERGED, 0, false },
		{ FFE_L_MERGED, 0, true },
		{ FFE_L_CHOPPED, 1000, false },
		{ FFE_L_CHOPPED, 3, true },
	};
	struct ffe_opts o;
	struct ffe *fe;
	unsigned nq = 1, qsize = 128;
	bool event_idx = false;
	const size_t len = 64 * 1024;
	uint8_t *buf = malloc(len), *rbuf = malloc(len);
	int c, ret;

	ffe_opts_init(&o);
	while ((c = getopt(argc, argv, "r:q:en:")) != -1) {
		switch (c) {
		case 'r': o.nregions = (unsigned)atoi(optarg); break;
		case 'q': nq = (unsigned)atoi(optarg); break;
		case 'e': event_idx = true; break;
		case 'n': qsize = (unsigned)atoi(optarg); break;
		default: usage();
		}
	}
	if (optind != argc - 1 || !buf || !rbuf)
		usage();
	fe = ffe_open(argv[optind], &o);
	if (!fe)
		return 1;
	ret = ffe_negotiate(fe, ffe_default_features(event_idx));
	if (ret < 0) {
		fprintf(stderr, "negotiate: %s (%s)\n", strerror(-ret), fe->err);
		return 1;
	}
	printf("features offered %#" PRIx64 " acked %#" PRIx64 "\n", fe->dev_features, fe->features);
	printf("protocol features offered %#" PRIx64 " acked %#" PRIx64 ", queues %u\n",
	       fe->dev_protocol_features, fe->protocol_features, fe->queue_num);
	printf("config: capacity %" PRIu64 " size_max %u seg_max %u blk_size %u writeback %u "
	       "num_queues %u max_discard_sectors %u max_discard_seg %u "
	       "max_write_zeroes_sectors %u max_wz_seg %u wz_may_unmap %u\n",
	       fe->cfg.capacity, fe->cfg.size_max, fe->cfg.seg_max, fe->cfg.blk_size,
	       fe->cfg.writeback, fe->cfg.num_queues, fe->cfg.max_discard_sectors,
	       fe->cfg.max_discard_seg, fe->cfg.max_write_zeroes_sectors,
	       fe->cfg.max_write_zeroes_seg, fe->cfg.write_zeroes_may_unmap);
	if (nq > fe->queue_num)
		nq = fe->queue_num;
	ret = ffe_set_mem_table(fe);
	CHECK(ret == 0, "SET_MEM_TABLE: %d %s", ret, fe->err);
	for (unsigned q = 0; q < nq; q++) {
		ret = ffe_vq_start(fe, q, qsize);
		CHECK(ret == 0, "start q%u: %d %s", q, ret, fe->err);
	}
	if (failures)
		return 1;

	for (unsigned q = 0; q < nq; q++) {
		struct ffe_vq *vq = &fe->vq[q];

		for (unsigned l = 0; l < sizeof(layouts) / sizeof(layouts[0]); l++) {
			uint64_t seed = q * 100 + l + 1, sector = (q * 16 + l) * (len / 512);
			size_t n = layouts[l].kind == FFE_L_CHOPPED && layouts[l].seg < 16 ? 512 : len;

			ffe_pattern(buf, n, seed);
			ret = ffe_blk_write(vq, sector, buf, n, &layouts[l]);
			CHECK(ret == FFE_BLK_S_OK, "q%u layout %u write: %d %s", q, l, ret, fe->err);
			memset(rbuf, 0, n);
			ret = ffe_blk_read(vq, sector, rbuf, n, &layouts[l]);
			CHECK(ret == FFE_BLK_S_OK, "q%u layout %u read: %d %s", q, l, ret, fe->err);
			CHECK(ffe_pattern_ok(rbuf, n, seed), "q%u layout %u: data mismatch", q, l);
		}
		ret = ffe_blk_flush(vq);
		CHECK(ret == FFE_BLK_S_OK, "q%u flush: %d", q, ret);
	}

	{
		char id[FFE_BLK_ID_BYTES + 1] = { 0 };
		uint32_t ul = 0;

		ret = ffe_blk_req(&fe->vq[0], FFE_BLK_T_GET_ID, 0, NULL, 0, id,
				  FFE_BLK_ID_BYTES, NULL, &ul);
		printf("GET_ID: status %d used_len %u id \"%s\"\n", ret, ul, id);
		ffe_pattern(buf, 4096, 7);
		ret = ffe_blk_req(&fe->vq[0], FFE_BLK_T_IN, 0, NULL, 0, buf, 4096, NULL, &ul);
		printf("IN 4096: status %d used_len %u\n", ret, ul);
		ret = ffe_blk_req(&fe->vq[0], FFE_BLK_T_OUT, 0, buf, 4096, NULL, 0, NULL, &ul);
		printf("OUT 4096: status %d used_len %u\n", ret, ul);
		ret = ffe_blk_req(&fe->vq[0], 0x77, 0, NULL, 0, NULL, 0, NULL, &ul);
		printf("type 0x77: status %d used_len %u\n", ret, ul);
		ret = ffe_blk_read(&fe->vq[0], fe->cfg.capacity, buf, 512, NULL);
		printf("read at capacity: status %d\n", ret);
	}
	if (fe->features & FFE_BIT(FFE_F_BLK_WRITE_ZEROES)) {
		ffe_pattern(buf, len, 99);
		ret = ffe_blk_write(&fe->vq[0], 4096, buf, len, NULL);
		CHECK(ret == 0, "write: %d", ret);
		ret = ffe_blk_write_zeroes(&fe->vq[0], 4096 + 8, 8, false);
		CHECK(ret == 0, "write zeroes: %d", ret);
		ret = ffe_blk_read(&fe->vq[0], 4096, rbuf, len, NULL);
		CHECK(ret == 0, "read: %d", ret);
		for (size_t i = 4096; i < 8192; i++)
			if (rbuf[i]) {
				CHECK(0, "write zeroes left byte %zu = %#x", i, rbuf[i]);
				break;
			}
		CHECK(ffe_pattern_ok(rbuf, 4096, 99), "write zeroes clobbered the head");
	}
	if (fe->features & FFE_BIT(FFE_F_BLK_DISCARD)) {
		ret = ffe_blk_discard(&fe->vq[0], 4096, 128);
		printf("discard: status %d\n", ret);
	}
	for (unsigned q = 0; q < nq; q++) {
		uint32_t base = 0;

		ret = ffe_vq_stop(fe, q, &base);
		CHECK(ret == 0, "GET_VRING_BASE q%u: %d %s", q, ret, fe->err);
		printf("q%u: GET_VRING_BASE %u (avail idx %u used idx %u) kicks %" PRIu64
		       " calls %" PRIu64 "\n", q, base, fe->vq[q].avail_idx,
		       ffe_vq_used_idx(&fe->vq[q]), fe->vq[q].kicks, fe->vq[q].calls);
		CHECK(base == fe->vq[q].avail_idx, "q%u base %u != %u", q, base, fe->vq[q].avail_idx);
	}
	ffe_close(fe);
	printf("%s (%d failures)\n", failures ? "FAILED" : "OK", failures);
	free(buf);
	free(rbuf);
	return failures ? 1 : 0;
}

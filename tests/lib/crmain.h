/* Hooks of the shared test runner (tests/lib/crmain.c). */
#ifndef VHOSTD_TESTS_CRMAIN_H
#define VHOSTD_TESTS_CRMAIN_H

#define CRMAIN_RUN_ENV "VHOSTD_TEST_RUN"

/* This run's id (the runner's pid), the same in every worker. */
const char *crmain_run_id(void);
/* Defined by a program that needs it: called once after the last test. */
void crmain_cleanup(void);
/* Defined (non-zero) by a program whose tests must run one at a time. */
extern unsigned crmain_jobs;

#endif

/* Helpers shared by the unit tests. */
#ifndef CK_TESTUTIL_H
#define CK_TESTUTIL_H
#include <check.h>
/* Run a Check suite; returns the process exit status. */
int ck_test_run(Suite *s);
#endif

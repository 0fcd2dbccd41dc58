/* http_stub.h — test-only HTTP file server and silent listener (see http_stub.c). */
#ifndef MODA_TEST_HTTP_STUB_H
#define MODA_TEST_HTTP_STUB_H

/* Listen on 127.0.0.1 at a free port (*port set); never accepts. Returns the fd or -1. */
int stub_listen(int *port);
/* Serve `file` to every connection on 127.0.0.1:*port from a thread. 0 or -1. */
int http_stub_start(const char *file, int *port);
void http_stub_stop(void);

#endif

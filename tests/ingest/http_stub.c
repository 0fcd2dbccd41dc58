/* http_stub.c — test helpers kept apart from msg.h (whose MSG_DONTWAIT clashes with
 * <sys/socket.h>): a one-file HTTP/1.0 server on 127.0.0.1 (every connection gets the whole
 * file, then closes: an end of stream for FFmpeg) and a socket that listens but never answers. */
#include "http_stub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static int srv_fd = -1;
static volatile int srv_stop;
static char srv_file[600];
static pthread_t srv_thread;

int stub_listen(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16) ||
        getsockname(fd, (struct sockaddr *)&a, &n)) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void *serve(void *arg)
{
    (void)arg;
    while (!srv_stop) {
        struct pollfd pf = {srv_fd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0) continue;
        int c = accept(srv_fd, NULL, NULL);
        if (c < 0) continue;
        char req[2048];
        struct pollfd pc = {c, POLLIN, 0};
        if (poll(&pc, 1, 1000) > 0 && recv(c, req, sizeof req, 0) < 0) req[0] = 0;
        FILE *f = fopen(srv_file, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            long len = ftell(f);
            fseek(f, 0, SEEK_SET);
            char hdr[256];
            int hn = snprintf(hdr, sizeof hdr, "HTTP/1.0 200 OK\r\nContent-Type: video/x-matroska\r\n"
                              "Content-Length: %ld\r\nConnection: close\r\n\r\n", len);
            ssize_t w = send(c, hdr, (size_t)hn, MSG_NOSIGNAL);
            char buf[65536];
            size_t k;
            while (w >= 0 && (k = fread(buf, 1, sizeof buf, f)) > 0) w = send(c, buf, k, MSG_NOSIGNAL);
            fclose(f);
        }
        close(c);
    }
    return NULL;
}

int http_stub_start(const char *file, int *port)
{
    snprintf(srv_file, sizeof srv_file, "%s", file);
    srv_fd = stub_listen(port);
    if (srv_fd < 0) return -1;
    srv_stop = 0;
    if (pthread_create(&srv_thread, NULL, serve, NULL)) {
        close(srv_fd);
        srv_fd = -1;
        return -1;
    }
    return 0;
}

void http_stub_stop(void)
{
    if (srv_fd < 0) return;
    srv_stop = 1;
    pthread_join(srv_thread, NULL);
    close(srv_fd);
    srv_fd = -1;
}

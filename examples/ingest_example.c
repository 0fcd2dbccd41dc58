/* ingest_example.c — plugging a new camera type into moda with the SDK (common/moda_ingest.h).
 * This "camera" reads raw RGB frames of W×H from stdin, e.g. from a GStreamer or FFmpeg pipe:
 *   gst-launch-1.0 -q v4l2src ! videoconvert ! video/x-raw,format=RGB,width=640,height=480 \
 *     ! fdsink | ingest_example ipc:///tmp/moda-infer-frames.sock cam-7 640 480           */
#include <stdio.h>
#include <stdlib.h>

#include "moda_ingest.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s ENDPOINT CAMERA_ID WIDTH HEIGHT < raw-rgb-frames\n", argv[0]);
        return 2;
    }
    int w = atoi(argv[3]), h = atoi(argv[4]);
    err_t err = {0};
    moda_ingest_opts_t opts;
    moda_ingest_opts_default(&opts);
    opts.linger_ms = 2000; /* at the end, give queued frames 2 s to reach infer */
    moda_ingest_t *cam = moda_ingest_connect(argv[1], argv[2], &opts, &err);
    unsigned char *px = cam && w > 0 && h > 0 ? malloc((size_t)w * h * 3) : NULL;
    if (!px) {
        fprintf(stderr, "ingest_example: %s\n", cam ? "bad size" : err.msg);
        moda_ingest_close(&cam, NULL);
        return 1;
    }
    while (fread(px, (size_t)w * 3, (size_t)h, stdin) == (size_t)h) /* one frame */
        if (moda_ingest_send(cam, px, w, h, MODA_INGEST_RGB8, 0 /* now */, &err))
            fprintf(stderr, "ingest_example: %s\n", err.msg); /* never blocks: drops oldest */
    moda_ingest_stats_t st;
    moda_ingest_close(&cam, &st);
    fprintf(stderr, "captured %llu sent %llu dropped %llu\n", (unsigned long long)st.captured,
            (unsigned long long)st.sent, (unsigned long long)st.dropped);
    free(px);
    return 0;
}

/* test_unit — moda-ingest's pieces without processes: source specs, the synthetic generator,
 * the folder source (order, filtering, loop/end, a bad file skipped, missing/empty folder),
 * FFmpeg errors naming the file, and the config schema built from [camera.ID] sections
 * (inheritance, command-line camera, every refusal naming the key or line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image.h"
#include "ingest.h"
#include "source.h"
#include "../unit/t_check.h"

static const char *out;

static void test_spec(void)
{
    source_spec_t s;
    err_t e = {0};
    memset(&s, 0, sizeof s);
    T(source_spec_parse(&s, "synthetic:640x480", &e) == 0 && s.kind == SOURCE_SYNTHETIC &&
      s.width == 640 && s.height == 480);
    T(source_spec_parse(&s, "folder:/data/x", &e) == 0 && s.kind == SOURCE_FOLDER &&
      !strcmp(s.path, "/data/x"));
    T(source_spec_parse(&s, "video:a.mp4", &e) == 0 && s.kind == SOURCE_VIDEO && !strcmp(s.path, "a.mp4"));
    T(source_spec_parse(&s, "rtsp://10.0.0.7/s", &e) == 0 && s.kind == SOURCE_STREAM &&
      !strcmp(s.path, "rtsp://10.0.0.7/s"));
    T(source_spec_parse(&s, "http://h/x.mjpg", &e) == 0 && s.kind == SOURCE_STREAM);
    const char *bad[] = {"", "synthetic:640", "synthetic:8x8", "synthetic:640x480x", "folder:",
                         "webcam:0", "/data/x", "synthetic:99999x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        e.code = 0;
        T(source_spec_parse(&s, bad[i], &e) == ERR_INVALID);
        T(e.code == ERR_INVALID && e.msg[0]);
    }
}

static void test_synth(void)
{
    source_spec_t s = {.kind = SOURCE_SYNTHETIC, .width = 64, .height = 48};
    err_t e = {0};
    source_t *a = source_open(&s, NULL, &e), *b = source_open(&s, NULL, &e);
    T(a && b);
    if (!a || !b) return;
    uint8_t first[64 * 48 * 3];
    for (uint64_t k = 1; k <= 5; k++) {
        source_frame_t fa, fb;
        T(source_read(a, &fa, &e) == 0 && source_read(b, &fb, &e) == 0);
        T(fa.w == 64 && fa.h == 48 && fa.fmt == MODA_INGEST_RGB8 && fa.size == sizeof first);
        T(!memcmp(fa.data, fb.data, fa.size)); /* a pure function of k */
        uint64_t idx = 0;
        for (int i = 0; i < 8; i++) idx |= (uint64_t)fa.data[3 * i] << (8 * i);
        T(idx == k);
        if (k == 1) memcpy(first, fa.data, sizeof first);
        else T(memcmp(first + 24, fa.data + 24, sizeof first - 24) != 0); /* it moves */
    }
    source_close(&a);
    source_close(&b);
    T(a == NULL);
}

static void write_png(const char *dir, const char *name, int w, int h, uint8_t v)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    image_t *im = image_new(w, h, 3, NULL);
    if (im) memset(im->data, v, (size_t)w * h * 3);
    T(im && image_save_png(im, p, NULL) == 0);
    image_destroy(&im);
}

static void test_folder(void)
{
    char dir[900], empty[900], p[1100];
    snprintf(dir, sizeof dir, "%s/folder", out);
    snprintf(empty, sizeof empty, "%s/empty", out);
    mkdir(dir, 0755);
    mkdir(empty, 0755);
    write_png(dir, "b.png", 8, 6, 20);
    write_png(dir, "a.png", 10, 4, 10);
    write_png(dir, "c.PNG", 4, 4, 30);
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    FILE *f = fopen(p, "w");
    if (f) fputs("not an image", f), fclose(f);
    snprintf(p, sizeof p, "%s/bb.png", dir); /* sorts between b and c, does not decode */
    f = fopen(p, "w");
    if (f) fputs("garbage", f), fclose(f);
    source_spec_t s = {.kind = SOURCE_FOLDER, .loop = 0};
    snprintf(s.path, sizeof s.path, "%s", dir);
    err_t e = {0};
    source_t *src = source_open(&s, NULL, &e);
    T(src != NULL);
    if (!src) return;
    source_frame_t fr;
    T(source_read(src, &fr, &e) == 0 && fr.w == 10 && fr.h == 4 && fr.data[0] == 10);
    T(source_read(src, &fr, &e) == 0 && fr.w == 8 && fr.h == 6 && fr.data[0] == 20);
    e.code = 0;
    T(source_read(src, &fr, &e) < 0 && e.code < 0); /* bb.png */
    T_HAS(e.msg, "bb.png");
    T(source_read(src, &fr, &e) == 0 && fr.w == 4 && fr.data[0] == 30); /* skipped past it */
    T(source_read(src, &fr, &e) == SOURCE_END);
    source_close(&src);
    s.loop = 1;
    src = source_open(&s, NULL, &e);
    int first10 = 0;
    for (int i = 0; src && i < 9; i++) {
        int rc = source_read(src, &fr, &e);
        if (rc == 0 && fr.data[0] == 10) first10++;
    }
    T(first10 >= 2); /* looped */
    source_close(&src);
    snprintf(s.path, sizeof s.path, "%s/missing", out);
    e.code = 0;
    T(source_open(&s, NULL, &e) == NULL && e.code == ERR_NOTFOUND);
    T_HAS(e.msg, "missing");
    snprintf(s.path, sizeof s.path, "%s", empty);
    T(source_open(&s, NULL, &e) == NULL && e.code == ERR_NOTFOUND);
    T_HAS(e.msg, "no .png");
}

static void test_av_errors(void)
{
    source_spec_t s = {.kind = SOURCE_VIDEO, .stall_ms = 500};
    snprintf(s.path, sizeof s.path, "%s/nope.mkv", out);
    err_t e = {0};
    T(source_open(&s, NULL, &e) == NULL && e.code == ERR_NOTFOUND);
    T_HAS(e.msg, "nope.mkv");
    snprintf(s.path, sizeof s.path, "%s/folder/notes.txt", out);
    e.code = 0;
    T(source_open(&s, NULL, &e) == NULL && e.code < 0);
    T_HAS(e.msg, "notes.txt");
}

/* Parse argv with the schema ingest_schema builds; returns 0 and fills c, or the error. */
static int load(int argc, char **argv, ingest_cfg_t *c, err_t *e)
{
    cfg_key_t *schema = ingest_schema(argc, argv, e);
    cfg_t *cfg = schema ? cfg_new("moda-ingest", "[options]", "", schema, 0, e) : NULL;
    int rc = cfg ? cfg_parse(cfg, argc, argv, e) : e->code;
    if (!rc) rc = ingest_cfg_load(c, cfg, schema, e);
    cfg_destroy(&cfg);
    ingest_schema_free(&schema);
    return rc;
}

static const char *conf(const char *name, const char *text)
{
    static char p[4][900];
    static int i;
    char *path = p[i++ % 4];
    snprintf(path, 900, "%s/%s", out, name);
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
    return path;
}

static void test_config(void)
{
    static ingest_cfg_t c;
    err_t e = {0};
    const char *good = conf("good.conf", "fps = 5\nqueue_len = 3\nconnect = tcp://127.0.0.1:7100\n"
                                         "[camera.line1]\nsource = synthetic:64x48\n"
                                         "[camera.line-2]\nsource = folder:/x\nfps = 1\nqueue_len = 8\n");
    char *a1[] = {"ingest", "--config", (char *)good, NULL};
    T(load(3, a1, &c, &e) == 0);
    T(c.ncams == 2 && !strcmp(c.connect, "tcp://127.0.0.1:7100"));
    T(!strcmp(c.cams[0].id, "line1") && c.cams[0].fps == 5 && c.cams[0].queue_len == 3 &&
      c.cams[0].src.kind == SOURCE_SYNTHETIC);
    T(!strcmp(c.cams[1].id, "line-2") && c.cams[1].fps == 1 && c.cams[1].queue_len == 8 &&
      c.cams[1].src.kind == SOURCE_FOLDER && c.cams[1].src.loop == 1);
    char *a2[] = {"ingest", "--camera-id", "cmd", "--source", "synthetic:32x32", "--fps", "2",
                  "--config", (char *)good, "--loop=false", NULL};
    T(load(10, a2, &c, &e) == 0 && c.ncams == 3 && !strcmp(c.cams[0].id, "cmd") &&
      c.cams[0].fps == 2 && c.cams[2].src.loop == 0);
    char *a3[] = {"ingest", "--camera-id", "line1", "--source", "synthetic:32x32", "--config",
                  (char *)good, NULL};
    T(load(7, a3, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "used twice");
    char *a4[] = {"ingest", NULL};
    T(load(1, a4, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "no camera");
    char *a5[] = {"ingest", "--camera-id", "x", NULL};
    T(load(3, a5, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "--source");
    char *a6[] = {"ingest", "--camera-id", "x", "--source", "webcam:0", NULL};
    T(load(5, a6, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "webcam:0");
    const char *badsec = conf("badsec.conf", "[camera.bad id]\nsource = synthetic:32x32\n");
    char *a7[] = {"ingest", "--config", (char *)badsec, NULL};
    T(load(3, a7, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "badsec.conf:1");
    const char *nosrc = conf("nosrc.conf", "[camera.a]\nfps = 3\n");
    char *a8[] = {"ingest", "--config", (char *)nosrc, NULL};
    T(load(3, a8, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "camera.a.source");
    const char *typo = conf("typo.conf", "[camera.a]\nsource = synthetic:32x32\nfsp = 3\n");
    char *a9[] = {"ingest", "--config", (char *)typo, NULL};
    T(load(3, a9, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "fsp");
    char *a10[] = {"ingest", "--config", "/nonexistent/x.conf", NULL};
    T(load(3, a10, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "x.conf");
    char many[4096] = "";
    for (int i = 0; i < INGEST_MAX_CAMS + 1; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "[camera.c%d]\nsource = synthetic:32x32\n", i);
    const char *toomany = conf("many.conf", many);
    char *a11[] = {"ingest", "--config", (char *)toomany, NULL};
    T(load(3, a11, &c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "more than");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
        return 2;
    }
    t_watchdog(60);
    out = argv[1];
    mkdir(out, 0755);
    test_spec();
    test_synth();
    test_folder();
    test_av_errors();
    test_config();
    return t_done("ingest_unit");
}

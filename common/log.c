/* log.c — key=value line logging to stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_level = -1; /* -1: not yet read from MODA_LOG */
static const char *g_name;

int log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, names[i]) == 0) return i;
    return -1;
}

int log_get_level(void)
{
    if (g_level < 0) {
        int l = log_parse_level(getenv("MODA_LOG"));
        g_level = l < 0 ? LOG_INFO : l;
    }
    return g_level;
}

void log_set_level(int level)
{
    g_level = level;
}

void log_set_name(const char *svc)
{
    g_name = svc;
}

void log_write(int level, const char *fmt, ...)
{
    static const char *tags[] = {"debug", "info ", "warn ", "error"};
    if (level < log_get_level() || level < 0 || level > LOG_ERROR) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, tags[level]);
    if (g_name && n < (int)sizeof line) n += snprintf(line + n, sizeof line - (size_t)n, "svc=%s ", g_name);
    if (n < (int)sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if (n >= (int)sizeof line - 1) n = (int)sizeof line - 2;
    line[n] = '\n';
    line[n + 1] = '\0';
    fputs(line, stderr);
}

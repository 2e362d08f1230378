/*
 * copydata-send.exe: does what Windows integrations do to MicroSIP - find the
 * window of class "MicroSIP" and send it WM_COPYDATA - plus the malformed
 * messages a robust receiver must survive. Used by the tests and the bench.
 *
 *   copydata-send.exe [--class NAME] [--enum] [--wait MS] [--dw N]
 *                     [--text TEXT | --odd TEXT | --no-nul TEXT | --huge BYTES | --null]
 *                     [--repeat N] [--timeout MS] [--find-only]
 *
 * --enum     find the window with EnumWindows + GetClassNameW instead of FindWindowW
 * --wait MS  keep looking for the window for up to MS milliseconds
 * --dw N     COPYDATASTRUCT.dwData (default 1)
 * --text T   UTF-16LE T plus NUL, cbData = 2 * (length + 1), as MicroSIP sends
 * --odd T    the same bytes with cbData one less: odd
 * --no-nul T the same bytes without the terminator in cbData
 * --huge N   N bytes of 'A' ending in a NUL (N even): over the shim's limit
 * --null     lpData NULL, cbData 0
 * --repeat N send the same message N times, timing each
 * --find-only  find the window (with --wait), send nothing
 *
 * Output (one line each, stdout):
 *   window 0x... found with FindWindowW|EnumWindows
 *   reply <LRESULT> us <microseconds from SendMessage to its return>
 *   summary n=<N> median_us=<> min_us=<> max_us=<>          (with --repeat)
 * Exit: 0 sent, 2 no window, 3 SendMessageTimeout failed, 64 bad usage.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

typedef struct {
    const wchar_t *class_name;
    HWND found;
} enum_ctx;

static BOOL CALLBACK enum_proc(HWND hwnd, LPARAM lp)
{
    enum_ctx *ctx = (enum_ctx *)lp;
    wchar_t name[256];

    if (GetClassNameW(hwnd, name, 256) > 0 && wcscmp(name, ctx->class_name) == 0) {
        ctx->found = hwnd;
        return FALSE; /* stop */
    }
    return TRUE;
}

static HWND find_window(const wchar_t *class_name, int use_enum)
{
    enum_ctx ctx;

    if (!use_enum)
        return FindWindowW(class_name, NULL);
    ctx.class_name = class_name;
    ctx.found = NULL;
    EnumWindows(enum_proc, (LPARAM)&ctx);
    return ctx.found;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static int usage(void)
{
    fprintf(stderr, "usage: copydata-send [--class NAME] [--enum] [--wait MS] [--dw N]\n"
                    "         [--text T | --odd T | --no-nul T | --huge BYTES | --null]\n"
                    "         [--repeat N] [--timeout MS] [--find-only]\n");
    return 64;
}

int wmain(int argc, wchar_t **argv)
{
    const wchar_t *class_name = L"MicroSIP";
    const wchar_t *text = L"";
    int use_enum = 0, find_only = 0, i;
    unsigned long long dw = 1;
    unsigned long wait_ms = 0, timeout_ms = 60000;
    long repeat = 1;
    enum { M_TEXT, M_ODD, M_NONUL, M_HUGE, M_NULL } mode = M_TEXT;
    size_t huge = 0;
    unsigned char *buf = NULL;
    size_t cb;
    COPYDATASTRUCT cds;
    HWND hwnd;
    ULONGLONG deadline;
    LARGE_INTEGER freq;
    long long *samples;

    for (i = 1; i < argc; i++) {
        const wchar_t *a = argv[i];
        const wchar_t *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!wcscmp(a, L"--enum")) { use_enum = 1; continue; }
        if (!wcscmp(a, L"--null")) { mode = M_NULL; continue; }
        if (!wcscmp(a, L"--find-only")) { find_only = 1; continue; }
        if (v == NULL)
            return usage();
        i++;
        if (!wcscmp(a, L"--class")) class_name = v;
        else if (!wcscmp(a, L"--wait")) wait_ms = wcstoul(v, NULL, 10);
        else if (!wcscmp(a, L"--timeout")) timeout_ms = wcstoul(v, NULL, 10);
        else if (!wcscmp(a, L"--dw")) dw = wcstoull(v, NULL, 0);
        else if (!wcscmp(a, L"--repeat")) repeat = wcstol(v, NULL, 10);
        else if (!wcscmp(a, L"--text")) { mode = M_TEXT; text = v; }
        else if (!wcscmp(a, L"--odd")) { mode = M_ODD; text = v; }
        else if (!wcscmp(a, L"--no-nul")) { mode = M_NONUL; text = v; }
        else if (!wcscmp(a, L"--huge")) { mode = M_HUGE; huge = (size_t)wcstoull(v, NULL, 10); }
        else return usage();
    }
    if (repeat < 1 || (mode == M_HUGE && (huge < 2 || huge % 2)))
        return usage();

    /* Build the payload exactly as the sender's memory will hold it. */
    if (mode == M_HUGE) {
        cb = huge;
        buf = (unsigned char *)malloc(cb);
        if (buf == NULL)
            return 3;
        for (size_t k = 0; k + 1 < cb; k += 2) {
            buf[k] = 'A';
            buf[k + 1] = 0;
        }
        buf[cb - 2] = buf[cb - 1] = 0;
    } else if (mode != M_NULL) {
        size_t units = wcslen(text);
        cb = (units + 1) * 2; /* wchar_t is UTF-16 on Windows */
        buf = (unsigned char *)malloc(cb);
        if (buf == NULL)
            return 3;
        memcpy(buf, text, cb);
        if (mode == M_ODD)
            cb -= 1; /* the buffer stays whole: only cbData lies */
        else if (mode == M_NONUL)
            cb -= 2;
    } else {
        cb = 0;
    }
    cds.dwData = (ULONG_PTR)dw;
    cds.cbData = (DWORD)cb;
    cds.lpData = buf;

    deadline = GetTickCount64() + wait_ms;
    while ((hwnd = find_window(class_name, use_enum)) == NULL && GetTickCount64() < deadline)
        Sleep(10);
    if (hwnd == NULL) {
        printf("no window of class %ls\n", class_name);
        fflush(stdout);
        free(buf);
        return 2;
    }
    printf("window %p found with %s\n", (void *)hwnd, use_enum ? "EnumWindows" : "FindWindowW");
    fflush(stdout);
    if (find_only) {
        free(buf);
        return 0;
    }

    samples = (long long *)calloc((size_t)repeat, sizeof *samples);
    if (samples == NULL)
        return 3;
    QueryPerformanceFrequency(&freq);
    for (i = 0; i < repeat; i++) {
        DWORD_PTR result = 0;
        LARGE_INTEGER t0, t1;
        QueryPerformanceCounter(&t0);
        if (!SendMessageTimeoutW(hwnd, WM_COPYDATA, 0, (LPARAM)&cds, SMTO_NORMAL, timeout_ms,
                                 &result)) {
            printf("failed error %lu\n", (unsigned long)GetLastError());
            fflush(stdout);
            free(buf);
            free(samples);
            return 3;
        }
        QueryPerformanceCounter(&t1);
        samples[i] = (t1.QuadPart - t0.QuadPart) * 1000000LL / freq.QuadPart;
        printf("reply %llu us %lld\n", (unsigned long long)result, samples[i]);
    }
    if (repeat > 1) {
        qsort(samples, (size_t)repeat, sizeof *samples, cmp_ll);
        printf("summary n=%ld median_us=%lld min_us=%lld max_us=%lld\n", repeat,
               repeat % 2 ? samples[repeat / 2]
                          : (samples[repeat / 2 - 1] + samples[repeat / 2]) / 2,
               samples[0], samples[repeat - 1]);
    }
    fflush(stdout);
    free(buf);
    free(samples);
    return 0;
}

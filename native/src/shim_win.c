/*
 * MicroSIP.exe, the shim: stands in for MicroSIP's window so Windows
 * integrations keep working, unchanged, against microsip-engine.
 *
 * Integrations talk to MicroSIP in two ways (spec sections 1-2):
 *   - they find the top-level window of class "MicroSIP" and send it
 *     WM_COPYDATA (dwData 1 = run this command line, 2 = queue it);
 *   - they run "MicroSIP.exe <args>", whose second instance forwards <args> to
 *     the first one with WM_COPYDATA and exits.
 * This program does both jobs. The resident owns the window and forwards every
 * message to the engine's "copydata" control command over TCP (the engine runs
 * on Linux or elsewhere; Wine has no AF_UNIX). A launcher is any other start.
 *
 * The forwarding logic proper (validation, JSON, base64, reply parsing,
 * command-line splitting) lives in shim_core.c, unit-tested without Windows.
 */
#define WIN32_LEAN_AND_MEAN
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0601 /* Windows 7: ChangeWindowMessageFilterEx */
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shim_core.h"

#define CLASS_NAME L"MicroSIP"
#define WINDOW_TITLE L"MicroSIP"
/*
 * Resident marker: an environment variable, not an argument, because every
 * argument belongs to MicroSIP's own grammar (an option of ours could shadow a
 * number someone dials). Its value is the launcher's PID, which names the
 * event the resident signals once its window exists.
 */
#define RESIDENT_ENV L"MICROSIP_SHIM_RESIDENT"
#define READY_EVENT_FMT L"Local\\MicroSIP-shim-ready-%lu"
/* One resident per session: a second one would make FindWindow ambiguous. */
#define RESIDENT_MUTEX L"Local\\MicroSIP-shim-resident"
#define START_TIMEOUT_MS 10000
#define CLOSE_TIMEOUT_MS 10000
#define REPLY_CAP 65536

/* Exit codes of the program (a launcher's are what integrations may see). */
enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_ALREADY = 3, EXIT_NO_WINDOW = 4 };

typedef struct {
    char host[256];         /* UTF-8, for getaddrinfo */
    char port[8];           /* digits, validated */
    wchar_t token_file[1024];
    DWORD timeout_ms;       /* connect, send and each reply */
    size_t max_bytes;       /* largest cbData forwarded */
    wchar_t log_path[1024];
    wchar_t ini_path[1024];
    int port_ok;
} shim_config;

static shim_config g_cfg;
static FILE *g_log;
static SOCKET g_sock = INVALID_SOCKET;
static unsigned long g_next_id = 1;
static char g_reply_buf[REPLY_CAP];

/* ---- log ---------------------------------------------------------------- */

/*
 * A resident runs for months: past LOG_MAX bytes the log becomes
 * microsip-shim.log.old (replacing the previous one) and a new one starts.
 */
#define LOG_MAX (4L * 1024 * 1024)

static void rotate_log(void)
{
    wchar_t old[1100];

    if (g_log == NULL || ftell(g_log) < LOG_MAX)
        return;
    fclose(g_log);
    _snwprintf(old, 1100, L"%ls.old", g_cfg.log_path);
    old[1099] = L'\0';
    MoveFileExW(g_cfg.log_path, old, MOVEFILE_REPLACE_EXISTING);
    g_log = _wfopen(g_cfg.log_path, L"ab");
}

/*
 * One line per event, flushed at once: the log is how a user (and the tests)
 * see what the shim did, since a GUI-subsystem program has no console.
 */
static void shim_log(const char *level, const char *fmt, ...)
{
    SYSTEMTIME t;
    va_list ap;

    if (g_log == NULL)
        return;
    GetLocalTime(&t);
    fprintf(g_log, "%04u-%02u-%02u %02u:%02u:%02u.%03u [%lu] %s: ", t.wYear, t.wMonth, t.wDay,
            t.wHour, t.wMinute, t.wSecond, t.wMilliseconds, (unsigned long)GetCurrentProcessId(),
            level);
    va_start(ap, fmt);
    vfprintf(g_log, fmt, ap);
    va_end(ap);
    fputs("\r\n", g_log);
    fflush(g_log);
    rotate_log();
}

static void to_utf8(const wchar_t *w, char *out, int cap)
{
    if (WideCharToMultiByte(CP_UTF8, 0, w, -1, out, cap, NULL, NULL) == 0 && cap > 0)
        out[0] = '\0';
}

static void open_log(void)
{
    if (g_cfg.log_path[0])
        g_log = _wfopen(g_cfg.log_path, L"ab");
    if (g_log == NULL) { /* beside the exe may be read-only (Program Files) */
        wchar_t tmp[MAX_PATH + 32];
        DWORD n = GetTempPathW(MAX_PATH, tmp);
        if (n > 0 && n < MAX_PATH) {
            wcscat(tmp, L"microsip-shim.log");
            g_log = _wfopen(tmp, L"ab");
            if (g_log)
                wcscpy(g_cfg.log_path, tmp);
        }
    }
}

/* ---- configuration ------------------------------------------------------ */

/* The environment wins over the ini: tests and wrappers set it per process. */
static int get_env(const wchar_t *name, wchar_t *out, DWORD cap)
{
    DWORD n = GetEnvironmentVariableW(name, out, cap);
    return n > 0 && n < cap;
}

static void get_setting(const wchar_t *section, const wchar_t *key, const wchar_t *env,
                        const wchar_t *fallback, wchar_t *out, DWORD cap)
{
    if (env && get_env(env, out, cap))
        return;
    GetPrivateProfileStringW(section, key, fallback, out, cap, g_cfg.ini_path);
}

/* Directory of this exe, with a trailing backslash. */
static void exe_dir(wchar_t *out, DWORD cap)
{
    DWORD n = GetModuleFileNameW(NULL, out, cap);
    wchar_t *slash;

    if (n == 0 || n >= cap) {
        out[0] = L'\0';
        return;
    }
    slash = wcsrchr(out, L'\\');
    if (slash)
        slash[1] = L'\0';
    else
        out[0] = L'\0';
}

static void load_config(void)
{
    wchar_t dir[1024], value[1024];
    char port[32];
    long n;

    exe_dir(dir, 1024);
    if (!get_env(L"MICROSIP_SHIM_INI", g_cfg.ini_path, 1024))
        _snwprintf(g_cfg.ini_path, 1024, L"%lsmicrosip-shim.ini", dir);
    g_cfg.ini_path[1023] = L'\0';

    get_setting(L"Shim", L"log", L"MICROSIP_SHIM_LOG", L"", g_cfg.log_path, 1024);
    if (!g_cfg.log_path[0])
        _snwprintf(g_cfg.log_path, 1024, L"%lsmicrosip-shim.log", dir);
    g_cfg.log_path[1023] = L'\0';

    get_setting(L"Engine", L"host", L"MICROSIP_SHIM_HOST", L"127.0.0.1", value, 1024);
    to_utf8(value, g_cfg.host, (int)sizeof g_cfg.host);
    if (!g_cfg.host[0])
        strcpy(g_cfg.host, "127.0.0.1");

    get_setting(L"Engine", L"port", L"MICROSIP_SHIM_PORT", L"", value, 1024);
    to_utf8(value, port, (int)sizeof port);
    g_cfg.port_ok = shim_parse_port(port) > 0;
    snprintf(g_cfg.port, sizeof g_cfg.port, "%s", g_cfg.port_ok ? port : "");

    get_setting(L"Engine", L"tokenFile", L"MICROSIP_SHIM_TOKEN_FILE", L"", g_cfg.token_file,
                1024);

    get_setting(L"Engine", L"timeoutMs", L"MICROSIP_SHIM_TIMEOUT_MS", L"30000", value, 1024);
    n = wcstol(value, NULL, 10);
    g_cfg.timeout_ms = (DWORD)(n >= 100 && n <= 600000 ? n : 30000);

    get_setting(L"Shim", L"maxBytes", NULL, L"65536", value, 1024);
    n = wcstol(value, NULL, 10);
    g_cfg.max_bytes = n >= 2 && n <= 1048576 ? (size_t)n : (size_t)SHIM_MAX_PAYLOAD_DEFAULT;
}

/* ---- the engine connection ---------------------------------------------- */

static void net_close(void)
{
    if (g_sock != INVALID_SOCKET) {
        closesocket(g_sock);
        g_sock = INVALID_SOCKET;
    }
}

static int send_all(SOCKET s, const char *data, size_t len)
{
    while (len > 0) {
        int chunk = len > 0x10000000 ? 0x10000000 : (int)len;
        int n = send(s, data, chunk, 0);
        if (n <= 0)
            return 0;
        data += n;
        len -= (size_t)n;
    }
    return 1;
}

/*
 * One reply line. SO_RCVTIMEO bounds each recv, and the engine writes a reply
 * in one go, so this cannot hang for longer than the timeout per chunk.
 */
static int read_line(SOCKET s, shim_linebuf *lb, char *err, size_t errcap)
{
    char chunk[4096];

    shim_linebuf_reset(lb);
    while (!lb->complete) {
        int n = recv(s, chunk, sizeof chunk, 0);
        if (n == 0) {
            snprintf(err, errcap, "the engine closed the connection");
            return 0;
        }
        if (n < 0) {
            int e = WSAGetLastError();
            if (e == WSAETIMEDOUT)
                snprintf(err, errcap, "no reply from the engine within %lu ms",
                         (unsigned long)g_cfg.timeout_ms);
            else
                snprintf(err, errcap, "receive failed (WSA error %d)", e);
            return 0;
        }
        /*
         * Bytes after the newline would belong to a next reply; a request gets
         * exactly one reply line, so none arrive and nothing needs keeping.
         */
        shim_linebuf_feed(lb, chunk, (size_t)n);
    }
    return 1;
}

static int read_token(char *token, size_t cap, char *err, size_t errcap)
{
    char buf[SHIM_TOKEN_MAX + 64];
    char path[1024];
    DWORD got = 0;
    HANDLE h;

    to_utf8(g_cfg.token_file, path, (int)sizeof path);
    if (!g_cfg.token_file[0]) {
        snprintf(err, errcap, "no token file configured ([Engine] tokenFile in %s)",
                 "microsip-shim.ini");
        return 0;
    }
    h = CreateFileW(g_cfg.token_file, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                    OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        snprintf(err, errcap, "cannot open the token file %s (error %lu)", path,
                 (unsigned long)GetLastError());
        return 0;
    }
    if (!ReadFile(h, buf, (DWORD)sizeof buf, &got, NULL))
        got = 0;
    CloseHandle(h);
    if (shim_token_from_file(buf, got, token, cap) == 0) {
        snprintf(err, errcap, "the token file %s holds no valid token", path);
        return 0;
    }
    return 1;
}

/* Connect with a deadline: a blocking connect to a dead remote host takes ~21 s. */
static SOCKET connect_with_timeout(const struct addrinfo *ai, DWORD timeout_ms)
{
    u_long nonblocking = 1, blocking = 0;
    SOCKET s = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    fd_set wr, ex;
    struct timeval tv;

    if (s == INVALID_SOCKET)
        return s;
    ioctlsocket(s, (long)FIONBIO, &nonblocking); /* the macro is unsigned, the API signed */
    if (connect(s, ai->ai_addr, (int)ai->ai_addrlen) != 0 &&
        WSAGetLastError() != WSAEWOULDBLOCK) {
        closesocket(s);
        return INVALID_SOCKET;
    }
    FD_ZERO(&wr);
    FD_ZERO(&ex);
    FD_SET(s, &wr);
    FD_SET(s, &ex);
    tv.tv_sec = (long)(timeout_ms / 1000);
    tv.tv_usec = (long)(timeout_ms % 1000) * 1000;
    if (select(0, NULL, &wr, &ex, &tv) != 1 || FD_ISSET(s, &ex)) {
        closesocket(s); /* timed out, or refused (Windows reports it in ex) */
        return INVALID_SOCKET;
    }
    ioctlsocket(s, (long)FIONBIO, &blocking);
    return s;
}

/* Connect and authenticate: the first line of a TCP control connection is the token. */
static int net_connect(char *err, size_t errcap)
{
    struct addrinfo hints, *res = NULL, *ai;
    char token[SHIM_TOKEN_MAX + 1], hello[SHIM_TOKEN_MAX + 32];
    DWORD timeout = g_cfg.timeout_ms;
    shim_linebuf lb;
    shim_reply reply;
    size_t len;
    BOOL nodelay = TRUE;
    int rc;

    if (!g_cfg.port_ok) {
        snprintf(err, errcap, "no engine port configured ([Engine] port in microsip-shim.ini)");
        return 0;
    }
    if (!read_token(token, sizeof token, err, errcap))
        return 0;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    rc = getaddrinfo(g_cfg.host, g_cfg.port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errcap, "cannot resolve %s (error %d)", g_cfg.host, rc);
        return 0;
    }
    for (ai = res; ai && g_sock == INVALID_SOCKET; ai = ai->ai_next)
        g_sock = connect_with_timeout(ai, timeout);
    freeaddrinfo(res);
    if (g_sock == INVALID_SOCKET) {
        snprintf(err, errcap, "the engine is not reachable at %s:%s", g_cfg.host, g_cfg.port);
        return 0;
    }
    setsockopt(g_sock, SOL_SOCKET, SO_RCVTIMEO, (const char *)&timeout, sizeof timeout);
    setsockopt(g_sock, SOL_SOCKET, SO_SNDTIMEO, (const char *)&timeout, sizeof timeout);
    /* Request and reply are single small writes: do not let Nagle hold them back. */
    setsockopt(g_sock, IPPROTO_TCP, TCP_NODELAY, (const char *)&nodelay, sizeof nodelay);

    len = shim_build_hello(hello, sizeof hello, token);
    SecureZeroMemory(token, sizeof token);
    shim_linebuf_init(&lb, g_reply_buf, sizeof g_reply_buf);
    if (len == (size_t)-1 || !send_all(g_sock, hello, len)) {
        SecureZeroMemory(hello, sizeof hello);
        snprintf(err, errcap, "cannot send the token to the engine");
        net_close();
        return 0;
    }
    SecureZeroMemory(hello, sizeof hello);
    if (!read_line(g_sock, &lb, err, errcap)) {
        net_close();
        return 0;
    }
    if (shim_parse_reply(lb.buf, lb.len, &reply) != 0 || reply.ok != 1) {
        snprintf(err, errcap, "the engine refused the connection: %s %s",
                 reply.code[0] ? reply.code : "(bad reply)", reply.message);
        net_close();
        return 0;
    }
    return 1;
}

/*
 * A kept-open connection may have died (the engine restarted): if it is
 * readable while we have asked nothing, it is closed or out of step. Checking
 * before sending, rather than retrying after, means a request is never sent
 * twice: once sent, its outcome is whatever the engine says or an error.
 */
static void drop_if_stale(void)
{
    fd_set rd;
    struct timeval tv = {0, 0};

    if (g_sock == INVALID_SOCKET)
        return;
    FD_ZERO(&rd);
    FD_SET(g_sock, &rd);
    if (select(0, &rd, NULL, NULL, &tv) != 0) {
        shim_log("info", "the engine connection was closed; reconnecting");
        net_close();
    }
}

/*
 * Send one request line and read its reply. The engine closes a connection idle
 * for longer than its controlIdleTimeout with an "idle" reply, and never runs a
 * request it reads after that: if our request crossed that close on a kept-open
 * connection, it was not run, so it is sent once more on a new connection.
 */
static int net_request(const char *req, size_t len, shim_reply *reply, char *err, size_t errcap)
{
    shim_linebuf lb;
    int attempt, fresh;

    for (attempt = 0;; attempt++) {
        drop_if_stale();
        fresh = g_sock == INVALID_SOCKET;
        if (fresh && !net_connect(err, errcap))
            return 0;
        shim_linebuf_init(&lb, g_reply_buf, sizeof g_reply_buf);
        if (!send_all(g_sock, req, len)) {
            snprintf(err, errcap, "sending to the engine failed (WSA error %d)",
                     WSAGetLastError());
            net_close();
            return 0;
        }
        if (!read_line(g_sock, &lb, err, errcap)) {
            net_close();
            return 0;
        }
        if (shim_parse_reply(lb.buf, lb.len, reply) != 0) {
            snprintf(err, errcap, "unreadable reply from the engine");
            net_close();
            return 0;
        }
        if (reply->ok == 0 && !strcmp(reply->code, "idle") && !fresh && attempt == 0) {
            shim_log("info", "the engine closed the idle connection before our request; "
                             "sending it again on a new one");
            net_close();
            continue;
        }
        return 1;
    }
}

/* ---- the resident --------------------------------------------------------- */

/*
 * Error codes meaning the engine did not run the command line: MicroSIP
 * answers TRUE when it drops a command (its SIP stack is not running), FALSE
 * when it ran it - whatever the outcome, since WM_COPYDATA carries no result.
 */
static int dropped_code(const char *code)
{
    static const char *const dropped[] = {"copydata_error", "stopped",   "bad_params",
                                          "bad_request",    "too_large", "forbidden",
                                          "busy",           "unknown_command", "idle"};
    size_t i;

    for (i = 0; i < sizeof dropped / sizeof dropped[0]; i++)
        if (!strcmp(code, dropped[i]))
            return 1;
    return 0;
}

static LRESULT on_copydata(const COPYDATASTRUCT *cds)
{
    char why[256], err[512], preview[200];
    shim_reply reply;
    shim_status st;
    char *req;
    size_t len;
    LARGE_INTEGER t0, t1, freq;

    if (cds == NULL) {
        shim_log("error", "rejected WM_COPYDATA: no COPYDATASTRUCT");
        return TRUE;
    }
    st = shim_check_copydata((uint64_t)cds->dwData, cds->lpData, (size_t)cds->cbData,
                             g_cfg.max_bytes, why, sizeof why);
    if (st != SHIM_OK) {
        shim_log("error", "rejected WM_COPYDATA dwData=%llu cbData=%lu (%s): %s",
                 (unsigned long long)cds->dwData, (unsigned long)cds->cbData,
                 shim_status_name(st), why);
        return TRUE;
    }
    shim_utf16_preview((const unsigned char *)cds->lpData, cds->cbData, preview, sizeof preview);
    req = (char *)malloc(shim_copydata_request_size(cds->cbData));
    if (req == NULL) {
        shim_log("error", "out of memory for a %lu-byte message", (unsigned long)cds->cbData);
        return TRUE;
    }
    len = shim_build_copydata(req, shim_copydata_request_size(cds->cbData), g_next_id++,
                              (uint64_t)cds->dwData, (const unsigned char *)cds->lpData,
                              cds->cbData);
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t0);
    if (len == (size_t)-1 || !net_request(req, len, &reply, err, sizeof err)) {
        free(req);
        shim_log("error", "dropped WM_COPYDATA dwData=%llu \"%s\": %s",
                 (unsigned long long)cds->dwData, preview,
                 len == (size_t)-1 ? "cannot build the request" : err);
        return TRUE;
    }
    free(req);
    QueryPerformanceCounter(&t1);
    if (reply.ok == 1) {
        shim_log("info", "forwarded WM_COPYDATA dwData=%llu \"%s\": ok (%.1f ms)",
                 (unsigned long long)cds->dwData, preview,
                 (double)(t1.QuadPart - t0.QuadPart) * 1000.0 / (double)freq.QuadPart);
        return FALSE;
    }
    shim_log("error", "forwarded WM_COPYDATA dwData=%llu \"%s\": engine error %s: %s",
             (unsigned long long)cds->dwData, preview, reply.code, reply.message);
    return dropped_code(reply.code) ? TRUE : FALSE;
}

static LRESULT CALLBACK wnd_proc(HWND hwnd, UINT msg, WPARAM wp, LPARAM lp)
{
    switch (msg) {
    case WM_COPYDATA:
        /* Runs inside the sender's SendMessage: for dwData 1 the engine has run
         * the command when we return, as MicroSIP's reply promises. */
        return on_copydata((const COPYDATASTRUCT *)lp);
    case WM_CLOSE:
        shim_log("info", "WM_CLOSE: exiting");
        DestroyWindow(hwnd);
        return 0;
    case WM_ENDSESSION:
        if (wp)
            DestroyWindow(hwnd);
        return 0;
    case WM_DESTROY:
        PostQuitMessage(0);
        return 0;
    default:
        return DefWindowProcW(hwnd, msg, wp, lp);
    }
}

/* Let WM_COPYDATA through UIPI when the shim runs elevated (Windows 7+). */
static void allow_copydata(HWND hwnd)
{
    typedef BOOL(WINAPI * filter_fn)(HWND, UINT, DWORD, void *);
    HMODULE user32 = GetModuleHandleW(L"user32.dll");
    filter_fn fn = user32 ? (filter_fn)(void (*)(void))GetProcAddress(
                                user32, "ChangeWindowMessageFilterEx")
                          : NULL;
    if (fn)
        fn(hwnd, WM_COPYDATA, 1 /* MSGFLT_ALLOW */, NULL);
}

static void signal_launcher(void)
{
    wchar_t value[32], name[64];
    HANDLE ev;

    if (!get_env(RESIDENT_ENV, value, 32))
        return;
    SetEnvironmentVariableW(RESIDENT_ENV, NULL); /* nothing we start inherits it */
    _snwprintf(name, 64, READY_EVENT_FMT, wcstoul(value, NULL, 10));
    name[63] = L'\0';
    ev = OpenEventW(EVENT_MODIFY_STATE, FALSE, name);
    if (ev) {
        SetEvent(ev);
        CloseHandle(ev);
    }
}

static int run_resident(HINSTANCE inst)
{
    WNDCLASSEXW wc;
    HANDLE mutex;
    HWND hwnd;
    MSG msg;
    char err[512], log_path[1024];

    mutex = CreateMutexW(NULL, FALSE, RESIDENT_MUTEX);
    if (mutex && GetLastError() == ERROR_ALREADY_EXISTS) {
        shim_log("info", "another resident is already running; exiting");
        CloseHandle(mutex);
        return EXIT_ALREADY;
    }
    memset(&wc, 0, sizeof wc);
    wc.cbSize = sizeof wc;
    wc.lpfnWndProc = wnd_proc;
    wc.hInstance = inst;
    wc.lpszClassName = CLASS_NAME;
    if (!RegisterClassExW(&wc)) {
        shim_log("error", "RegisterClassExW failed (error %lu)", (unsigned long)GetLastError());
        return EXIT_NO_WINDOW;
    }
    /*
     * A hidden top-level window, not a message-only one: FindWindow and
     * EnumWindows, which integrations use, do not see message-only windows.
     */
    hwnd = CreateWindowExW(0, CLASS_NAME, WINDOW_TITLE, WS_OVERLAPPEDWINDOW, CW_USEDEFAULT,
                           CW_USEDEFAULT, 320, 200, NULL, NULL, inst, NULL);
    if (hwnd == NULL) {
        /* 1400 under a display-less Wine: the null graphics driver is needed. */
        shim_log("error", "CreateWindowExW failed (error %lu)", (unsigned long)GetLastError());
        return EXIT_NO_WINDOW;
    }
    allow_copydata(hwnd);
    to_utf8(g_cfg.log_path, log_path, (int)sizeof log_path);
    shim_log("info", "resident: window %p class MicroSIP; engine %s:%s; log %s", (void *)hwnd,
             g_cfg.host, g_cfg.port_ok ? g_cfg.port : "(no port)", log_path);
    signal_launcher();
    /* Connect now so a configuration error shows up in the log at once. */
    if (!net_connect(err, sizeof err))
        shim_log("warning", "engine not connected yet: %s", err);
    while (GetMessageW(&msg, NULL, 0, 0) > 0) {
        TranslateMessage(&msg);
        DispatchMessageW(&msg);
    }
    net_close();
    if (mutex)
        CloseHandle(mutex);
    shim_log("info", "resident stopped");
    return EXIT_OK;
}

/* ---- the launcher ------------------------------------------------------- */

static HWND find_resident(void)
{
    return FindWindowW(CLASS_NAME, NULL);
}

/* Start a resident (this same exe) and wait for its window. */
static HWND start_resident(void)
{
    wchar_t exe[1024], cmd[1100], value[32], name[64];
    STARTUPINFOW si;
    PROCESS_INFORMATION pi;
    HANDLE ready, waits[2];
    DWORD n = GetModuleFileNameW(NULL, exe, 1024);
    ULONGLONG deadline = GetTickCount64() + START_TIMEOUT_MS;
    HWND hwnd = NULL;

    if (n == 0 || n >= 1024) {
        shim_log("error", "GetModuleFileNameW failed (error %lu)", (unsigned long)GetLastError());
        return NULL;
    }
    _snwprintf(name, 64, READY_EVENT_FMT, (unsigned long)GetCurrentProcessId());
    name[63] = L'\0';
    ready = CreateEventW(NULL, TRUE, FALSE, name);
    _snwprintf(value, 32, L"%lu", (unsigned long)GetCurrentProcessId());
    value[31] = L'\0';
    _snwprintf(cmd, 1100, L"\"%ls\"", exe); /* no arguments: see RESIDENT_ENV */
    cmd[1099] = L'\0';
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    SetEnvironmentVariableW(RESIDENT_ENV, value);
    if (!CreateProcessW(exe, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi)) {
        shim_log("error", "cannot start the resident (error %lu)", (unsigned long)GetLastError());
        SetEnvironmentVariableW(RESIDENT_ENV, NULL);
        if (ready)
            CloseHandle(ready);
        return NULL;
    }
    SetEnvironmentVariableW(RESIDENT_ENV, NULL);
    shim_log("info", "started a resident (pid %lu)", (unsigned long)pi.dwProcessId);
    /* Its window exists when it signals; if it exits instead, another
     * resident won the race: fall through to looking for that one's window. */
    waits[0] = ready;
    waits[1] = pi.hProcess;
    if (ready)
        WaitForMultipleObjects(2, waits, FALSE, START_TIMEOUT_MS);
    else
        WaitForInputIdle(pi.hProcess, START_TIMEOUT_MS);
    while ((hwnd = find_resident()) == NULL && GetTickCount64() < deadline)
        Sleep(10);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    if (ready)
        CloseHandle(ready);
    if (hwnd == NULL)
        shim_log("error", "the resident did not create its window within %d ms",
                 START_TIMEOUT_MS);
    return hwnd;
}

/* What MicroSIP's second instance does: WM_COPYDATA dwData=1, raw arguments. */
static int forward(HWND hwnd, const uint16_t *args)
{
    COPYDATASTRUCT cds;
    DWORD_PTR result = 0;
    size_t units = shim_u16len(args);
    char preview[200];

    cds.dwData = SHIM_DW_SYNC;
    cds.cbData = (DWORD)((units + 1) * 2);
    cds.lpData = (void *)args;
    shim_utf16_preview((const unsigned char *)args, cds.cbData, preview, sizeof preview);
    if (!SendMessageTimeoutW(hwnd, WM_COPYDATA, 0, (LPARAM)&cds, SMTO_NORMAL,
                             g_cfg.timeout_ms + 5000, &result)) {
        shim_log("error", "launcher: sending \"%s\" failed (error %lu)", preview,
                 (unsigned long)GetLastError());
        return EXIT_FAILED;
    }
    shim_log("info", "launcher: forwarded \"%s\" (reply %s)", preview,
             result ? "TRUE: dropped" : "FALSE");
    return result ? EXIT_FAILED : EXIT_OK;
}

/* "/exit": stop the engine, then close the resident and wait for it to go. */
static int do_exit(HWND hwnd)
{
    char req[64], err[512];
    shim_reply reply;
    size_t len = shim_build_command(req, sizeof req, g_next_id++, "exit");

    if (len != (size_t)-1 && net_request(req, len, &reply, err, sizeof err)) {
        if (reply.ok == 1)
            shim_log("info", "launcher: /exit: the engine is stopping");
        else
            shim_log("warning", "launcher: /exit: engine error %s: %s", reply.code,
                     reply.message);
    } else
        shim_log("warning", "launcher: /exit: engine not told: %s", err);
    net_close();
    if (hwnd) {
        DWORD pid = 0;
        HANDLE proc;
        GetWindowThreadProcessId(hwnd, &pid);
        proc = pid ? OpenProcess(SYNCHRONIZE, FALSE, pid) : NULL;
        PostMessageW(hwnd, WM_CLOSE, 0, 0);
        if (proc) {
            if (WaitForSingleObject(proc, CLOSE_TIMEOUT_MS) != WAIT_OBJECT_0)
                shim_log("warning", "launcher: /exit: the resident is still running");
            CloseHandle(proc);
        }
    }
    return EXIT_OK;
}

int WINAPI wWinMain(HINSTANCE inst, HINSTANCE prev, PWSTR cmdline, int show)
{
    WSADATA wsa;
    const uint16_t *args;
    wchar_t marker[32];
    HWND hwnd;
    int rc;

    (void)prev;
    (void)cmdline; /* recomputed from GetCommandLineW by the documented rule */
    (void)show;
    load_config();
    open_log();
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
        shim_log("error", "WSAStartup failed");
        return EXIT_FAILED;
    }
    args = shim_skip_program_name((const uint16_t *)GetCommandLineW());
    if (get_env(RESIDENT_ENV, marker, 32)) {
        rc = run_resident(inst);
    } else {
        hwnd = find_resident();
        switch (shim_launcher_action(args)) {
        case SHIM_LAUNCH_NONE: /* the first instance: become the resident */
        case SHIM_LAUNCH_MINIMIZED:
            rc = hwnd ? EXIT_OK : run_resident(inst);
            break;
        case SHIM_LAUNCH_EXIT:
            rc = do_exit(hwnd);
            break;
        case SHIM_LAUNCH_NOOP_IF_NOT_RUNNING:
            if (hwnd == NULL) {
                shim_log("info", "launcher: nothing running; not starting for this command");
                rc = EXIT_OK;
                break;
            }
            rc = forward(hwnd, args);
            break;
        case SHIM_LAUNCH_FORWARD:
        default:
            if (hwnd == NULL)
                hwnd = start_resident();
            rc = hwnd ? forward(hwnd, args) : EXIT_FAILED;
            break;
        }
    }
    WSACleanup();
    if (g_log)
        fclose(g_log);
    return rc;
}

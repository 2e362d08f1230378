/*
 * shim_core.c: see shim_core.h. Portable C99, no allocation, no globals.
 */
#include "shim_core.h"

#include <stdio.h>
#include <string.h>

/* snprintf into a fixed buffer; a cut message is still a message. */
#define SAY(...) ((why && whycap) ? (void)snprintf(why, whycap, __VA_ARGS__) : (void)0)

shim_status shim_check_copydata(uint64_t dw_data, const void *data, size_t cb, size_t max_bytes,
                                char *why, size_t whycap)
{
    const unsigned char *bytes = (const unsigned char *)data;

    if (why && whycap)
        why[0] = '\0';
    /* dwData first: an unknown request is refused whatever it carries. */
    if (dw_data != SHIM_DW_SYNC && dw_data != SHIM_DW_QUEUED) {
        SAY("unknown dwData %llu (1 = run now, 2 = queue)", (unsigned long long)dw_data);
        return SHIM_ERR_DWDATA;
    }
    if (cb == 0) {
        SAY("empty payload (cbData 0): expected UTF-16LE text and a NUL terminator");
        return SHIM_ERR_EMPTY;
    }
    if (bytes == NULL) {
        SAY("lpData is NULL but cbData is %zu", cb);
        return SHIM_ERR_NULL;
    }
    /* Size before content: an oversize payload is refused unread. */
    if (cb > max_bytes) {
        SAY("payload of %zu bytes exceeds the limit of %zu bytes", cb, max_bytes);
        return SHIM_ERR_TOO_LARGE;
    }
    if (cb % 2) {
        SAY("payload of %zu bytes has an odd length: not UTF-16LE", cb);
        return SHIM_ERR_ODD;
    }
    /* cb is even and >= 2 here, so bytes[cb - 2] and bytes[cb - 1] are inside. */
    if (bytes[cb - 2] != 0 || bytes[cb - 1] != 0) {
        SAY("payload of %zu bytes does not end with a NUL terminator (last code unit 0x%04X)",
            cb, (unsigned)(bytes[cb - 2] | (bytes[cb - 1] << 8)));
        return SHIM_ERR_NO_NUL;
    }
    return SHIM_OK;
}

const char *shim_status_name(shim_status status)
{
    switch (status) {
    case SHIM_OK: return "ok";
    case SHIM_ERR_DWDATA: return "unknown_dwdata";
    case SHIM_ERR_NULL: return "null_data";
    case SHIM_ERR_EMPTY: return "empty";
    case SHIM_ERR_TOO_LARGE: return "too_large";
    case SHIM_ERR_ODD: return "odd_length";
    case SHIM_ERR_NO_NUL: return "no_nul";
    }
    return "unknown";
}

/* ---- base64 ------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t shim_b64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t shim_b64_encode(const unsigned char *in, size_t n, char *out, size_t cap)
{
    size_t need = shim_b64_len(n);
    size_t i = 0, o = 0;

    if (n > ((size_t)-1 - 3) / 4 * 3 || cap < need + 1 || out == NULL)
        return (size_t)-1;
    for (; i + 3 <= n; i += 3) {
        unsigned long v = ((unsigned long)in[i] << 16) | ((unsigned long)in[i + 1] << 8) | in[i + 2];
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (n - i == 1) {
        unsigned long v = (unsigned long)in[i] << 16;
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        unsigned long v = ((unsigned long)in[i] << 16) | ((unsigned long)in[i + 1] << 8);
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* ---- token -------------------------------------------------------------- */

static int token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-';
}

int shim_token_valid(const char *token)
{
    size_t n = 0;

    if (token == NULL)
        return 0;
    for (; token[n]; n++) {
        if (!token_char((unsigned char)token[n]) || n >= SHIM_TOKEN_MAX)
            return 0;
    }
    return n >= SHIM_TOKEN_MIN;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

size_t shim_token_from_file(const char *text, size_t len, char *out, size_t cap)
{
    size_t start = 0, end = len, n;

    if (text == NULL || out == NULL || cap == 0)
        return 0;
    out[0] = '\0';
    /* Notepad saves "UTF-8" with a BOM. */
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
        (unsigned char)text[2] == 0xBF)
        start = 3;
    while (start < end && is_space((unsigned char)text[start]))
        start++;
    while (end > start && is_space((unsigned char)text[end - 1]))
        end--;
    n = end - start;
    if (n + 1 > cap || n > SHIM_TOKEN_MAX)
        return 0;
    memcpy(out, text + start, n);
    out[n] = '\0';
    if (strlen(out) != n || !shim_token_valid(out)) { /* strlen: an embedded NUL */
        out[0] = '\0';
        return 0;
    }
    return n;
}

/* ---- requests ----------------------------------------------------------- */

/* Append text to out[*o], keeping one byte for the NUL; 0 when it does not fit. */
static int put(char *out, size_t cap, size_t *o, const char *text)
{
    size_t n = strlen(text);

    if (*o + n + 1 > cap)
        return 0;
    memcpy(out + *o, text, n + 1);
    *o += n;
    return 1;
}

size_t shim_build_hello(char *out, size_t cap, const char *token)
{
    size_t o = 0;

    if (out == NULL || !shim_token_valid(token))
        return (size_t)-1;
    if (!put(out, cap, &o, "{\"token\":\"") || !put(out, cap, &o, token) ||
        !put(out, cap, &o, "\"}\n"))
        return (size_t)-1;
    return o;
}

size_t shim_copydata_request_size(size_t cb)
{
    /* fixed text + two 20-digit numbers + base64 + newline + NUL, with room */
    return 128 + shim_b64_len(cb);
}

size_t shim_build_copydata(char *out, size_t cap, unsigned long id, uint64_t dw_data,
                           const unsigned char *payload, size_t cb)
{
    char head[128];
    size_t o = 0, b;
    int n;

    if (out == NULL || (payload == NULL && cb))
        return (size_t)-1;
    n = snprintf(head, sizeof head,
                 "{\"id\":%lu,\"cmd\":\"copydata\",\"params\":{\"dwData\":%llu,\"payload_b64\":\"",
                 id, (unsigned long long)dw_data);
    if (n < 0 || (size_t)n >= sizeof head || !put(out, cap, &o, head))
        return (size_t)-1;
    b = shim_b64_encode(payload, cb, out + o, cap - o);
    if (b == (size_t)-1)
        return (size_t)-1;
    o += b;
    if (!put(out, cap, &o, "\"}}\n"))
        return (size_t)-1;
    return o;
}

size_t shim_build_command(char *out, size_t cap, unsigned long id, const char *cmd)
{
    size_t i;
    int n;

    if (out == NULL || cmd == NULL || !cmd[0])
        return (size_t)-1;
    for (i = 0; cmd[i]; i++) { /* command names are [a-z0-9_]: nothing to escape */
        char c = cmd[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return (size_t)-1;
    }
    n = snprintf(out, cap, "{\"id\":%lu,\"cmd\":\"%s\"}\n", id, cmd);
    if (n < 0 || (size_t)n >= cap)
        return (size_t)-1;
    return (size_t)n;
}

/* ---- replies: a small JSON reader -------------------------------------- */

typedef struct {
    const char *p;
    const char *end;
} cursor;

enum { J_OK = 0, J_BAD = -1, J_EOF = -2 }; /* J_EOF: the text stopped mid-value */

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
        c->p++;
}

static int hex4(cursor *c, unsigned *v)
{
    int i;

    *v = 0;
    for (i = 0; i < 4; i++) {
        char h;
        if (c->p >= c->end)
            return J_EOF;
        h = *c->p++;
        *v <<= 4;
        if (h >= '0' && h <= '9') *v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f') *v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') *v |= (unsigned)(h - 'A' + 10);
        else return J_BAD;
    }
    return J_OK;
}

/* Append a code point as UTF-8 if it fits (leaving room for the NUL); 0 if not. */
static int put_utf8(char *out, size_t cap, size_t *o, unsigned long cp)
{
    unsigned char b[4];
    size_t n, i;

    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 63));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 63));
        b[2] = (unsigned char)(0x80 | (cp & 63));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 63));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 63));
        b[3] = (unsigned char)(0x80 | (cp & 63));
        n = 4;
    }
    if (out == NULL || *o + n + 1 > cap)
        return 0; /* cut: a shortened message is fine, a split character is not */
    for (i = 0; i < n; i++)
        out[(*o)++] = (char)b[i];
    out[*o] = '\0';
    return 1;
}

/* Drop the bytes of a UTF-8 sequence cut short at the end of out[0..*o). */
static void trim_partial_utf8(char *out, size_t *o)
{
    size_t lead = *o, need;
    unsigned char b;

    while (lead > 0 && ((unsigned char)out[lead - 1] & 0xC0) == 0x80 && *o - lead < 3)
        lead--;
    if (lead == 0)
        return;
    b = (unsigned char)out[lead - 1];
    need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (*o - (lead - 1) < need) {
        *o = lead - 1;
        out[*o] = '\0';
    }
}

/* The code point of the escape after a backslash (c->p at its letter). */
static int read_escape(cursor *c, unsigned long *cp)
{
    unsigned hi, lo;
    int r;

    if (c->p >= c->end)
        return J_EOF;
    switch (*c->p++) {
    case '"': *cp = '"'; return J_OK;
    case '\\': *cp = '\\'; return J_OK;
    case '/': *cp = '/'; return J_OK;
    case 'b': *cp = '\b'; return J_OK;
    case 'f': *cp = '\f'; return J_OK;
    case 'n': *cp = '\n'; return J_OK;
    case 'r': *cp = '\r'; return J_OK;
    case 't': *cp = '\t'; return J_OK;
    case 'u':
        break;
    default:
        return J_BAD;
    }
    if ((r = hex4(c, &hi)) != J_OK)
        return r;
    *cp = hi;
    if (hi >= 0xD800 && hi < 0xDC00 && c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u') {
        cursor save = *c;
        c->p += 2;
        if (hex4(c, &lo) == J_OK && lo >= 0xDC00 && lo < 0xE000)
            *cp = 0x10000 + (((unsigned long)hi - 0xD800) << 10) + (lo - 0xDC00);
        else
            *c = save; /* not a pair: the lone half becomes U+FFFD below */
    }
    if (*cp >= 0xD800 && *cp < 0xE000)
        *cp = 0xFFFD;
    return J_OK;
}

/*
 * A JSON string at c->p (the opening quote); decoded into out when out != NULL.
 * A value longer than out is cut at a character boundary; the rest is still
 * read (and dropped) so the parse carries on after it.
 */
static int read_string(cursor *c, char *out, size_t cap)
{
    size_t o = 0;
    int full = out == NULL || cap == 0; /* once something did not fit, keep nothing */

    if (!full)
        out[0] = '\0';
    if (c->p >= c->end)
        return J_EOF;
    if (*c->p != '"')
        return J_BAD;
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p++;
        unsigned long cp;
        int r;
        if (ch == '"')
            return J_OK;
        if (ch < 0x20)
            return J_BAD;
        if (ch != '\\') { /* raw UTF-8 bytes pass through */
            if (full)
                continue;
            if (o + 2 <= cap) {
                out[o++] = (char)ch;
                out[o] = '\0';
            } else {
                full = 1;
                trim_partial_utf8(out, &o);
            }
            continue;
        }
        if ((r = read_escape(c, &cp)) != J_OK)
            return r;
        if (!full && !put_utf8(out, cap, &o, cp)) {
            full = 1;
            trim_partial_utf8(out, &o);
        }
    }
    return J_EOF;
}

static int read_literal(cursor *c, const char *word)
{
    size_t n = strlen(word), have = (size_t)(c->end - c->p);

    if (memcmp(c->p, word, have < n ? have : n) != 0)
        return J_BAD;
    if (have < n)
        return J_EOF;
    c->p += n;
    return J_OK;
}

static int read_number(cursor *c, long long *value, int *is_int)
{
    const char *start = c->p;
    int neg = 0, digits = 0, frac = 0;
    unsigned long long v = 0;

    if (c->p < c->end && *c->p == '-') { neg = 1; c->p++; }
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (v < 922337203685477580ULL)
            v = v * 10 + (unsigned)(*c->p - '0');
        c->p++;
        digits++;
    }
    while (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E' || *c->p == '+' ||
                             *c->p == '-' || (*c->p >= '0' && *c->p <= '9'))) {
        frac = 1;
        c->p++;
    }
    if (!digits)
        return c->p >= c->end && c->p - start <= 1 ? J_EOF : J_BAD;
    if (c->p >= c->end)
        return J_EOF; /* the number may go on beyond what we were given */
    if (value)
        *value = neg ? -(long long)v : (long long)v;
    if (is_int)
        *is_int = !frac;
    return J_OK;
}

static int skip_value(cursor *c, int depth);

/* The members of an object, c->p just after '{'. */
static int skip_members(cursor *c, char close, int depth)
{
    int r;

    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return J_OK;
    }
    for (;;) {
        skip_ws(c);
        if (close == '}') {
            if ((r = read_string(c, NULL, 0)) != J_OK)
                return r;
            skip_ws(c);
            if (c->p >= c->end)
                return J_EOF;
            if (*c->p++ != ':')
                return J_BAD;
        }
        if ((r = skip_value(c, depth + 1)) != J_OK)
            return r;
        skip_ws(c);
        if (c->p >= c->end)
            return J_EOF;
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == close) { c->p++; return J_OK; }
        return J_BAD;
    }
}

static int skip_value(cursor *c, int depth)
{
    if (depth > 32)
        return J_BAD; /* a reply is shallow; deep nesting is garbage */
    skip_ws(c);
    if (c->p >= c->end)
        return J_EOF;
    switch (*c->p) {
    case '"': return read_string(c, NULL, 0);
    case '{': c->p++; return skip_members(c, '}', depth);
    case '[': c->p++; return skip_members(c, ']', depth);
    case 't': return read_literal(c, "true");
    case 'f': return read_literal(c, "false");
    case 'n': return read_literal(c, "null");
    default: return read_number(c, NULL, NULL);
    }
}

/* "error": {"code": "...", "message": "..."} */
static int read_error(cursor *c, shim_reply *reply)
{
    int r;

    skip_ws(c);
    if (c->p >= c->end)
        return J_EOF;
    if (*c->p != '{')
        return skip_value(c, 1);
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return J_OK;
    }
    for (;;) {
        char key[16];
        skip_ws(c);
        if ((r = read_string(c, key, sizeof key)) != J_OK)
            return r;
        skip_ws(c);
        if (c->p >= c->end)
            return J_EOF;
        if (*c->p++ != ':')
            return J_BAD;
        skip_ws(c);
        if (!strcmp(key, "code") && c->p < c->end && *c->p == '"')
            r = read_string(c, reply->code, sizeof reply->code);
        else if (!strcmp(key, "message") && c->p < c->end && *c->p == '"')
            r = read_string(c, reply->message, sizeof reply->message);
        else
            r = skip_value(c, 2);
        if (r != J_OK)
            return r;
        skip_ws(c);
        if (c->p >= c->end)
            return J_EOF;
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == '}') { c->p++; return J_OK; }
        return J_BAD;
    }
}

int shim_parse_reply(const char *line, size_t len, shim_reply *reply)
{
    cursor c;
    int r, seen_ok = 0;

    if (reply == NULL)
        return -1;
    memset(reply, 0, sizeof *reply);
    reply->ok = -1;
    if (line == NULL)
        return -1;
    c.p = line;
    c.end = line + len;
    skip_ws(&c);
    if (c.p >= c.end || *c.p++ != '{')
        return -1;
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}')
        return -1; /* {} has no "ok" */
    for (;;) {
        char key[16];
        skip_ws(&c);
        if ((r = read_string(&c, key, sizeof key)) != J_OK)
            break;
        skip_ws(&c);
        if (c.p >= c.end) { r = J_EOF; break; }
        if (*c.p++ != ':') { r = J_BAD; break; }
        skip_ws(&c);
        if (!strcmp(key, "ok")) {
            if ((r = read_literal(&c, "true")) == J_OK)
                reply->ok = 1;
            else if ((r = read_literal(&c, "false")) == J_OK)
                reply->ok = 0;
            else
                break;
            seen_ok = 1;
        } else if (!strcmp(key, "id")) {
            long long id;
            int is_int = 0;
            if (c.p < c.end && (*c.p == '-' || (*c.p >= '0' && *c.p <= '9'))) {
                r = read_number(&c, &id, &is_int);
                if (r == J_OK && is_int) {
                    reply->has_id = 1;
                    reply->id = id;
                }
            } else {
                r = skip_value(&c, 1);
            }
        } else if (!strcmp(key, "error")) {
            r = read_error(&c, reply);
        } else {
            r = skip_value(&c, 1);
        }
        if (r != J_OK)
            break;
        skip_ws(&c);
        if (c.p >= c.end) { r = J_EOF; break; }
        if (*c.p == ',') { c.p++; continue; }
        if (*c.p == '}') { c.p++; r = J_OK; break; }
        r = J_BAD;
        break;
    }
    if (r == J_EOF)
        reply->truncated = 1;
    if (r == J_BAD || !seen_ok || (reply->ok != 0 && reply->ok != 1)) {
        reply->ok = -1;
        return -1;
    }
    return 0;
}

/* ---- line assembly ------------------------------------------------------ */

void shim_linebuf_init(shim_linebuf *lb, char *buf, size_t cap)
{
    lb->buf = buf;
    lb->cap = cap;
    shim_linebuf_reset(lb);
}

void shim_linebuf_reset(shim_linebuf *lb)
{
    lb->len = 0;
    lb->overflow = 0;
    lb->complete = 0;
    if (lb->buf && lb->cap)
        lb->buf[0] = '\0';
}

size_t shim_linebuf_feed(shim_linebuf *lb, const char *data, size_t n)
{
    size_t i;

    if (lb->complete || lb->buf == NULL || lb->cap == 0)
        return 0;
    for (i = 0; i < n; i++) {
        char ch = data[i];
        if (ch == '\n') {
            if (lb->len && lb->buf[lb->len - 1] == '\r' && !lb->overflow)
                lb->len--; /* CRLF, as the protocol tolerates */
            lb->buf[lb->len] = '\0';
            lb->complete = 1;
            return i + 1;
        }
        if (lb->len + 1 < lb->cap)
            lb->buf[lb->len++] = ch;
        else
            lb->overflow = 1; /* keep the head, drop the tail up to the newline */
    }
    lb->buf[lb->len] = '\0';
    return n;
}

/* ---- command lines ------------------------------------------------------ */

size_t shim_u16len(const uint16_t *s)
{
    size_t n = 0;

    if (s == NULL)
        return 0;
    while (s[n])
        n++;
    return n;
}

const uint16_t *shim_skip_program_name(const uint16_t *p)
{
    static const uint16_t empty[1] = {0};

    if (p == NULL)
        return empty;
    if (*p == '"') {
        /* quoted argv[0]: no escapes, ends at the next quote (or the end) */
        p++;
        while (*p && *p != '"')
            p++;
        if (*p == '"')
            p++;
    } else {
        while (*p > ' ')
            p++;
    }
    while (*p && *p <= ' ')
        p++;
    return p;
}

static int u16_equals(const uint16_t *a, const char *b)
{
    while (*a && *b && *a == (unsigned char)*b) {
        a++;
        b++;
    }
    return *a == 0 && *b == 0;
}

shim_launch shim_launcher_action(const uint16_t *args)
{
    if (args == NULL || args[0] == 0)
        return SHIM_LAUNCH_NONE;
    if (u16_equals(args, "/exit"))
        return SHIM_LAUNCH_EXIT;
    if (u16_equals(args, "/minimized"))
        return SHIM_LAUNCH_MINIMIZED;
    if (u16_equals(args, "/answer") || u16_equals(args, "/hangupall"))
        return SHIM_LAUNCH_NOOP_IF_NOT_RUNNING;
    return SHIM_LAUNCH_FORWARD;
}

/* ---- log preview -------------------------------------------------------- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/*
 * "/account:2 /password:secret" stores a password: logs get "/password:***".
 * Case-insensitive, every occurrence; the value runs to the next space. The
 * text only shrinks or grows by at most 2 bytes, and is cut if it must.
 */
static size_t redact_passwords(char *s, size_t len, size_t cap)
{
    static const char key[] = "/password:";
    const size_t klen = sizeof key - 1;
    size_t i = 0;

    while (i + klen <= len) {
        size_t k, end, vlen, newlen;
        for (k = 0; k < klen && lower((unsigned char)s[i + k]) == key[k]; k++)
            ;
        if (k < klen) {
            i++;
            continue;
        }
        i += klen;
        for (end = i; end < len && s[end] != ' '; end++)
            ;
        vlen = end - i;
        newlen = len - vlen + 3;
        if (newlen + 1 > cap) { /* no room to grow: cut the text at the key */
            s[i] = '\0';
            return i;
        }
        memmove(s + i + 3, s + end, len - end + 1); /* with the NUL */
        memcpy(s + i, "***", 3);
        len = newlen;
        i += 3;
    }
    return len;
}

size_t shim_utf16_preview(const unsigned char *data, size_t cb, char *out, size_t cap)
{
    size_t i, o = 0;
    const size_t room = cap > 4 ? cap - 4 : 0; /* keep space for "..." and NUL */

    if (out == NULL || cap == 0)
        return 0;
    out[0] = '\0';
    if (data == NULL)
        return 0;
    for (i = 0; i + 1 < cb; i += 2) {
        unsigned long cp = (unsigned long)data[i] | ((unsigned long)data[i + 1] << 8);
        size_t before = o;
        if (cp == 0)
            break;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 3 < cb) {
            unsigned long lo = (unsigned long)data[i + 2] | ((unsigned long)data[i + 3] << 8);
            if (lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 2;
            }
        }
        if (cp >= 0xD800 && cp < 0xE000)
            cp = 0xFFFD;
        if (cp < 0x20 || cp == 0x7F)
            cp = '?';
        put_utf8(out, room + 1, &o, cp);
        if (o == before) { /* did not fit */
            if (cap >= 4) {
                memcpy(out + o, "...", 4);
                o += 3;
            }
            return redact_passwords(out, o, cap);
        }
    }
    out[o] = '\0';
    return redact_passwords(out, o, cap);
}

int shim_parse_port(const char *text)
{
    long v = 0;
    size_t i;

    if (text == NULL || !text[0])
        return -1;
    for (i = 0; text[i]; i++) {
        if (text[i] < '0' || text[i] > '9' || i >= 5)
            return -1;
        v = v * 10 + (text[i] - '0');
    }
    return v >= 1 && v <= 65535 ? (int)v : -1;
}

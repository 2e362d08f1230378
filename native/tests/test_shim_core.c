/*
 * Unit tests of shim_core.c: built with the host compiler (CTest, no Wine) and
 * cross-built for Windows (CTest runs that one under Wine). Plain C, no test
 * framework: each CHECK prints the failing line and the run exits non-zero.
 */
#include "shim_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            printf("%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                \
        }                                                                                  \
    } while (0)

#define CHECK_STR(got, want)                                                               \
    do {                                                                                   \
        checks++;                                                                          \
        if (strcmp((got), (want)) != 0) {                                                  \
            failures++;                                                                    \
            printf("%s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, (got), (want)); \
        }                                                                                  \
    } while (0)

/* ASCII to UTF-16 code units (the tests only need ASCII command lines). */
static const uint16_t *u16(const char *s)
{
    static uint16_t bufs[4][512];
    static int next;
    uint16_t *b = bufs[next++ % 4];
    size_t i;

    for (i = 0; s[i] && i < 511; i++)
        b[i] = (unsigned char)s[i];
    b[i] = 0;
    return b;
}

/* UTF-16LE bytes of ASCII text plus NUL, like an integration's lpData. */
static size_t payload(const char *s, unsigned char *out)
{
    size_t i, n = strlen(s);

    for (i = 0; i < n; i++) {
        out[2 * i] = (unsigned char)s[i];
        out[2 * i + 1] = 0;
    }
    out[2 * n] = out[2 * n + 1] = 0;
    return 2 * n + 2;
}

static int u16_eq(const uint16_t *got, const char *want)
{
    size_t i;

    for (i = 0; want[i]; i++)
        if (got[i] != (unsigned char)want[i])
            return 0;
    return got[i] == 0;
}

static void test_check_copydata(void)
{
    unsigned char buf[64];
    char why[256];
    size_t cb = payload("5551234", buf);

    CHECK(cb == 16);
    CHECK(shim_check_copydata(1, buf, cb, 65536, why, sizeof why) == SHIM_OK);
    CHECK_STR(why, "");
    CHECK(shim_check_copydata(2, buf, cb, 65536, why, sizeof why) == SHIM_OK);

    CHECK(shim_check_copydata(0, buf, cb, 65536, why, sizeof why) == SHIM_ERR_DWDATA);
    CHECK_STR(why, "unknown dwData 0 (1 = run now, 2 = queue)");
    CHECK(shim_check_copydata(3, buf, cb, 65536, why, sizeof why) == SHIM_ERR_DWDATA);
    CHECK(shim_check_copydata(0xFFFFFFFFFFFFFFFFull, buf, cb, 65536, why, sizeof why) ==
          SHIM_ERR_DWDATA);
    CHECK(strstr(why, "18446744073709551615") != NULL);

    CHECK(shim_check_copydata(1, NULL, 0, 65536, why, sizeof why) == SHIM_ERR_EMPTY);
    CHECK(shim_check_copydata(1, buf, 0, 65536, why, sizeof why) == SHIM_ERR_EMPTY);
    CHECK(shim_check_copydata(1, NULL, 4, 65536, why, sizeof why) == SHIM_ERR_NULL);

    /* Oversize is refused before any byte is read: buf is far smaller than cb
     * (a sanitizer build would flag a read past it). */
    CHECK(shim_check_copydata(1, buf, 1u << 20, 65536, why, sizeof why) == SHIM_ERR_TOO_LARGE);
    CHECK_STR(why, "payload of 1048576 bytes exceeds the limit of 65536 bytes");
    CHECK(shim_check_copydata(1, buf, 65537, 65536, why, sizeof why) == SHIM_ERR_TOO_LARGE);

    CHECK(shim_check_copydata(1, buf, cb - 1, 65536, why, sizeof why) == SHIM_ERR_ODD);
    CHECK_STR(why, "payload of 15 bytes has an odd length: not UTF-16LE");
    CHECK(shim_check_copydata(1, buf, 1, 65536, why, sizeof why) == SHIM_ERR_ODD);

    CHECK(shim_check_copydata(1, buf, cb - 2, 65536, why, sizeof why) == SHIM_ERR_NO_NUL);
    CHECK_STR(why, "payload of 14 bytes does not end with a NUL terminator (last code unit "
                   "0x0034)");
    /* exactly at the limit is fine */
    CHECK(shim_check_copydata(1, buf, cb, cb, why, sizeof why) == SHIM_OK);
    /* an embedded NUL before the terminator is the engine's business (it reads
     * up to the first NUL, as MicroSIP does) */
    buf[2] = buf[3] = 0;
    CHECK(shim_check_copydata(1, buf, cb, 65536, why, sizeof why) == SHIM_OK);
    /* NULL reason buffer is allowed */
    CHECK(shim_check_copydata(7, buf, cb, 65536, NULL, 0) == SHIM_ERR_DWDATA);
    /* a tiny reason buffer is cut, still terminated */
    CHECK(shim_check_copydata(7, buf, cb, 65536, why, 8) == SHIM_ERR_DWDATA);
    CHECK(strlen(why) == 7);
    CHECK_STR(shim_status_name(SHIM_ERR_ODD), "odd_length");
    CHECK_STR(shim_status_name(SHIM_ERR_TOO_LARGE), "too_large");
}

static void test_base64(void)
{
    static const char *vectors[][2] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                       {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                       {"foobar", "Zm9vYmFy"}};
    char out[64];
    unsigned char bytes[64], all[256];
    size_t i;

    for (i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        size_t n = strlen(vectors[i][0]);
        CHECK(shim_b64_encode((const unsigned char *)vectors[i][0], n, out, sizeof out) ==
              strlen(vectors[i][1]));
        CHECK_STR(out, vectors[i][1]);
        CHECK(shim_b64_len(n) == strlen(vectors[i][1]));
    }
    /* the example of docs/control-protocol.md */
    CHECK(shim_b64_encode(bytes, payload("5551234", bytes), out, sizeof out) == 24);
    CHECK_STR(out, "NQA1ADUAMQAyADMANAAAAA==");
    /* every byte value, and the exact capacity edge */
    for (i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    {
        char big[400];
        CHECK(shim_b64_encode(all, 256, big, sizeof big) == 344);
        CHECK(strncmp(big, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v", 64) == 0);
        CHECK_STR(big + 340, "/w==");
        CHECK(shim_b64_encode(all, 256, big, 344) == (size_t)-1); /* no room for the NUL */
        CHECK(shim_b64_encode(all, 256, big, 345) == 344);
    }
    CHECK(shim_b64_encode((const unsigned char *)"f", 1, out, 4) == (size_t)-1);
    CHECK(shim_b64_encode((const unsigned char *)"f", 1, NULL, 64) == (size_t)-1);
}

static void test_token(void)
{
    char out[600], text[700];
    const char *good = "Abc-def_ghi.jkl~mno+pqr/stu=vwx0123456789";

    CHECK(shim_token_valid(good));
    CHECK(!shim_token_valid("short"));
    CHECK(!shim_token_valid("0123456789abcde")); /* 15 */
    CHECK(shim_token_valid("0123456789abcdef")); /* 16 */
    CHECK(!shim_token_valid("0123456789abcdef\""));
    CHECK(!shim_token_valid("0123456789abcdef\\"));
    CHECK(!shim_token_valid("0123456789 abcdef"));
    CHECK(!shim_token_valid(NULL));
    memset(text, 'a', 513);
    text[513] = '\0';
    CHECK(!shim_token_valid(text));
    text[512] = '\0';
    CHECK(shim_token_valid(text));

    CHECK(shim_token_from_file("tok_0123456789abcdef\n", 21, out, sizeof out) == 20);
    CHECK_STR(out, "tok_0123456789abcdef");
    CHECK(shim_token_from_file("\xEF\xBB\xBF  tok_0123456789abcdef\r\n", 27, out, sizeof out) == 20);
    CHECK_STR(out, "tok_0123456789abcdef");
    CHECK(shim_token_from_file("tok_0123\n456789abcdef\n", 22, out, sizeof out) == 0);
    CHECK_STR(out, "");
    CHECK(shim_token_from_file("tok_0123456789abcdef\0zz", 23, out, sizeof out) == 0);
    CHECK(shim_token_from_file("", 0, out, sizeof out) == 0);
    CHECK(shim_token_from_file("tok_0123456789abcdef", 20, out, 20) == 0); /* no room for NUL */
}

static void test_requests(void)
{
    char out[256];
    unsigned char bytes[64];
    size_t cb = payload("5551234", bytes);

    CHECK(shim_build_hello(out, sizeof out, "tok_0123456789abcdef") == 33);
    CHECK_STR(out, "{\"token\":\"tok_0123456789abcdef\"}\n");
    CHECK(shim_build_hello(out, sizeof out, "bad \"token\" 0123456789") == (size_t)-1);
    CHECK(shim_build_hello(out, 33, "tok_0123456789abcdef") == (size_t)-1);
    CHECK(shim_build_hello(out, 34, "tok_0123456789abcdef") == 33);

    CHECK(shim_build_copydata(out, sizeof out, 7, 1, bytes, cb) != (size_t)-1);
    CHECK_STR(out, "{\"id\":7,\"cmd\":\"copydata\",\"params\":{\"dwData\":1,\"payload_b64\":"
                   "\"NQA1ADUAMQAyADMANAAAAA==\"}}\n");
    CHECK(strlen(out) + 1 <= shim_copydata_request_size(cb));
    CHECK(shim_build_copydata(out, 40, 7, 1, bytes, cb) == (size_t)-1);
    CHECK(shim_build_copydata(out, 80, 7, 1, bytes, cb) == (size_t)-1);
    {
        /* the request-size promise holds for the biggest ids and payloads */
        size_t big = 65536, need = shim_copydata_request_size(big), n;
        unsigned char *p = (unsigned char *)calloc(big, 1);
        char *req = (char *)malloc(need);
        CHECK(p && req);
        if (p && req) {
            n = shim_build_copydata(req, need, 0xFFFFFFFFul, 0xFFFFFFFFFFFFFFFFull, p, big);
            CHECK(n != (size_t)-1 && n + 1 <= need && req[n - 1] == '\n');
        }
        free(p);
        free(req);
    }
    CHECK(shim_build_command(out, sizeof out, 3, "exit") == 22);
    CHECK_STR(out, "{\"id\":3,\"cmd\":\"exit\"}\n");
    CHECK(shim_build_command(out, sizeof out, 3, "ex\"it") == (size_t)-1);
    CHECK(shim_build_command(out, 10, 3, "exit") == (size_t)-1);
}

static void test_parse_reply(void)
{
    shim_reply r;
    char longline[2000];
    size_t i;
#define PARSE(s) shim_parse_reply((s), strlen(s), &r)

    CHECK(PARSE("{\"id\":7,\"ok\":true,\"result\":{\"queued\":false,\"results\":[{\"a\":\"}\"}]}}") == 0);
    CHECK(r.ok == 1 && r.has_id && r.id == 7 && !r.truncated);
    CHECK_STR(r.code, "");

    CHECK(PARSE("{\"id\":8,\"ok\":false,\"error\":{\"code\":\"copydata_error\","
                "\"message\":\"payload of 3 bytes has an odd length: not UTF-16LE\"}}") == 0);
    CHECK(r.ok == 0 && r.id == 8);
    CHECK_STR(r.code, "copydata_error");
    CHECK_STR(r.message, "payload of 3 bytes has an odd length: not UTF-16LE");

    /* any key order, whitespace, null id, escapes */
    CHECK(PARSE(" { \"error\" : { \"message\" : \"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\\ud800x\" ,"
                " \"code\" : \"forbidden\" } , \"ok\" : false , \"id\" : null } ") == 0);
    CHECK(r.ok == 0 && !r.has_id);
    CHECK_STR(r.code, "forbidden");
    CHECK_STR(r.message, "a\"b\\c\n\xC3\xA9\xF0\x9F\x98\x80\xEF\xBF\xBDx");

    CHECK(PARSE("{\"id\":\"s\",\"ok\":true,\"result\":null}") == 0);
    CHECK(r.ok == 1 && !r.has_id);
    CHECK(PARSE("{\"id\":-3,\"ok\":true}") == 0 && r.has_id && r.id == -3);
    CHECK(PARSE("{\"id\":1.5,\"ok\":true}") == 0 && !r.has_id);

    /* a reply cut after "ok" still tells success from failure */
    CHECK(PARSE("{\"id\":9,\"ok\":true,\"result\":{\"text\":\"aaaa") == 0);
    CHECK(r.ok == 1 && r.truncated);
    CHECK(PARSE("{\"id\":9,\"ok\":false,\"error\":{\"code\":\"sip_er") == 0);
    CHECK(r.ok == 0 && r.truncated);
    CHECK_STR(r.code, "sip_er");

    /* not replies */
    CHECK(PARSE("") == -1 && r.ok == -1);
    CHECK(PARSE("[]") == -1);
    CHECK(PARSE("{}") == -1);
    CHECK(PARSE("{\"id\":1}") == -1);
    CHECK(PARSE("{\"ok\":\"true\"}") == -1);
    CHECK(PARSE("{\"ok\":tru") == -1);
    CHECK(PARSE("{\"ok\":true,,}") == -1);
    CHECK(PARSE("{\"event\":\"call_state\",\"state\":\"confirmed\"}") == -1);
    CHECK(PARSE("garbage") == -1);
    CHECK(PARSE("{\"ok\":true,\"x\":\"\\q\"}") == -1);
    CHECK(PARSE("{\"ok\":true,\"x\":\"a\001b\"}") == -1);
    CHECK(shim_parse_reply(NULL, 0, &r) == -1);
    CHECK(shim_parse_reply("{\"ok\":true}", 11, NULL) == -1);

    /* deep nesting is refused, not recursed into without bound */
    strcpy(longline, "{\"ok\":true,\"x\":");
    for (i = 0; i < 100; i++)
        strcat(longline, "[");
    CHECK(PARSE(longline) == -1); /* "ok" was seen, but the rest is garbage */
    strcpy(longline, "{\"x\":");
    for (i = 0; i < 100; i++)
        strcat(longline, "[");
    for (i = 0; i < 100; i++)
        strcat(longline, "]");
    strcat(longline, ",\"ok\":true}");
    CHECK(PARSE(longline) == -1);

    /* a long message is cut to the buffer at a character boundary */
    strcpy(longline, "{\"ok\":false,\"error\":{\"code\":\"x\",\"message\":\"");
    for (i = 0; i < 300; i++)
        strcat(longline, "\xC3\xA9"); /* é, 2 bytes each */
    strcat(longline, "\"}}");
    CHECK(PARSE(longline) == 0 && r.ok == 0);
    CHECK(strlen(r.message) == 254); /* 127 whole characters in 255 bytes */
    CHECK_STR(r.code, "x");
#undef PARSE
}

static void test_linebuf(void)
{
    char buf[16];
    shim_linebuf lb;
    size_t used;

    shim_linebuf_init(&lb, buf, sizeof buf);
    used = shim_linebuf_feed(&lb, "{\"ok\":", 6);
    CHECK(used == 6 && !lb.complete);
    used = shim_linebuf_feed(&lb, "true}\r\nnext", 11);
    CHECK(used == 7 && lb.complete && !lb.overflow);
    CHECK_STR(lb.buf, "{\"ok\":true}");
    CHECK(shim_linebuf_feed(&lb, "more", 4) == 0); /* complete: nothing taken */
    shim_linebuf_reset(&lb);
    used = shim_linebuf_feed(&lb, "0123456789abcdefghij\nX", 22);
    CHECK(used == 21 && lb.complete && lb.overflow);
    CHECK(lb.len == 15);
    CHECK_STR(lb.buf, "0123456789abcde");
    shim_linebuf_reset(&lb);
    CHECK(shim_linebuf_feed(&lb, "\n", 1) == 1 && lb.complete && lb.len == 0);
}

static void test_command_line(void)
{
    CHECK(u16_eq(shim_skip_program_name(u16("\"C:\\Program Files\\MicroSIP\\MicroSIP.exe\" 5551234")),
                 "5551234"));
    CHECK(u16_eq(shim_skip_program_name(u16("MicroSIP.exe   /exit")), "/exit"));
    CHECK(u16_eq(shim_skip_program_name(u16("MicroSIP.exe\t\"msip:micmute\"")), "\"msip:micmute\""));
    CHECK(u16_eq(shim_skip_program_name(u16("MicroSIP.exe 101 Hello  there ")), "101 Hello  there "));
    CHECK(u16_eq(shim_skip_program_name(u16("\"C:\\a b\\MicroSIP.exe\"\"x y\"")), "\"x y\""));
    CHECK(u16_eq(shim_skip_program_name(u16("MicroSIP.exe")), ""));
    CHECK(u16_eq(shim_skip_program_name(u16("\"unterminated program name")), ""));
    CHECK(u16_eq(shim_skip_program_name(u16("")), ""));
    CHECK(u16_eq(shim_skip_program_name(NULL), ""));
    /* backslash-quote is not an escape in argv[0] */
    CHECK(u16_eq(shim_skip_program_name(u16("\"C:\\dir\\\" /answer")), "/answer"));
    CHECK(shim_u16len(u16("abc")) == 3);
    CHECK(shim_u16len(NULL) == 0);

    CHECK(shim_launcher_action(u16("")) == SHIM_LAUNCH_NONE);
    CHECK(shim_launcher_action(NULL) == SHIM_LAUNCH_NONE);
    CHECK(shim_launcher_action(u16("/exit")) == SHIM_LAUNCH_EXIT);
    CHECK(shim_launcher_action(u16("/minimized")) == SHIM_LAUNCH_MINIMIZED);
    CHECK(shim_launcher_action(u16("/answer")) == SHIM_LAUNCH_NOOP_IF_NOT_RUNNING);
    CHECK(shim_launcher_action(u16("/hangupall")) == SHIM_LAUNCH_NOOP_IF_NOT_RUNNING);
    CHECK(shim_launcher_action(u16("/EXIT")) == SHIM_LAUNCH_FORWARD);
    CHECK(shim_launcher_action(u16("/exit ")) == SHIM_LAUNCH_FORWARD);
    CHECK(shim_launcher_action(u16("/exi")) == SHIM_LAUNCH_FORWARD);
    CHECK(shim_launcher_action(u16("/reset")) == SHIM_LAUNCH_FORWARD);
    CHECK(shim_launcher_action(u16("5551234")) == SHIM_LAUNCH_FORWARD);
}

static void test_preview(void)
{
    unsigned char b[256];
    char out[128];
    size_t cb;
    static const unsigned char emoji[] = {0x61, 0, 0x3D, 0xD8, 0x00, 0xDE, 0x00, 0xD8, 0x62, 0, 0x0A, 0, 0, 0};

    cb = payload("msip:answer", b);
    CHECK(shim_utf16_preview(b, cb, out, sizeof out) == 11);
    CHECK_STR(out, "msip:answer");
    CHECK(shim_utf16_preview(emoji, sizeof emoji, out, sizeof out) > 0);
    CHECK_STR(out, "a\xF0\x9F\x98\x80\xEF\xBF\xBD" "b?");
    /* odd cb: the dangling byte is ignored; no NUL: stops at cb */
    CHECK(shim_utf16_preview(b, 5, out, sizeof out) == 2);
    CHECK_STR(out, "ms");
    cb = payload("0123456789abcdefghij", b);
    CHECK(shim_utf16_preview(b, cb, out, 12) == 11);
    CHECK_STR(out, "01234567...");
    CHECK(shim_utf16_preview(NULL, 10, out, sizeof out) == 0);
    CHECK_STR(out, "");

    /* passwords never reach the log */
    cb = payload("/account:2 /password:s3cr3t-value", b);
    CHECK(shim_utf16_preview(b, cb, out, sizeof out) == 24);
    CHECK_STR(out, "/account:2 /password:***");
    cb = payload("/PassWord:ab /password: x /password:", b);
    shim_utf16_preview(b, cb, out, sizeof out);
    CHECK_STR(out, "/PassWord:*** /password:*** x /password:***");
    {
        char small[32];
        /* each short value grows by 2; no room for the second: cut at its key */
        cb = payload("/password:a /password:b", b);
        CHECK(shim_utf16_preview(b, cb, small, 27) == 24);
        CHECK_STR(small, "/password:*** /password:");
        cb = payload("/password:a", b); /* cut by the size first, still redacted */
        CHECK(shim_utf16_preview(b, cb, small, 14) == 13);
        CHECK_STR(small, "/password:***");
        cb = payload("x /password:averylongsecret", b); /* cut first, then redacted */
        shim_utf16_preview(b, cb, small, sizeof small);
        CHECK(strstr(small, "avery") == NULL && strstr(small, "secret") == NULL);
    }
}

static void test_port(void)
{
    CHECK(shim_parse_port("5099") == 5099);
    CHECK(shim_parse_port("1") == 1);
    CHECK(shim_parse_port("65535") == 65535);
    CHECK(shim_parse_port("65536") == -1);
    CHECK(shim_parse_port("0") == -1);
    CHECK(shim_parse_port("") == -1);
    CHECK(shim_parse_port("50a") == -1);
    CHECK(shim_parse_port("-1") == -1);
    CHECK(shim_parse_port("000080") == -1);
    CHECK(shim_parse_port(NULL) == -1);
}

int main(void)
{
    test_check_copydata();
    test_base64();
    test_token();
    test_requests();
    test_parse_reply();
    test_linebuf();
    test_command_line();
    test_preview();
    test_port();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

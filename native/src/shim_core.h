/*
 * shim_core: the forwarding logic of the MicroSIP.exe shim as pure C functions.
 *
 * Nothing here includes <windows.h> or touches a socket: these functions take
 * bytes and return bytes, so the same file is unit-tested natively with the host
 * gcc (CTest, no Wine) and again cross-built under Wine. The Win32 part
 * (shim_win.c) only glues them to window messages and Winsock.
 *
 * UTF-16 text is handled as uint16_t code units, never as wchar_t: wchar_t is
 * 16 bits on Windows but 32 bits on Linux, and the tests must see the same
 * layout the window message carries.
 */
#ifndef SHIM_CORE_H
#define SHIM_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* WM_COPYDATA dwData values MicroSIP understands (spec section 2). */
#define SHIM_DW_SYNC 1u   /* run the command line, reply after it ran */
#define SHIM_DW_QUEUED 2u /* queue it, reply at once (3.20+) */

/* Largest cbData accepted; the engine's own decoder uses the same limit. */
#define SHIM_MAX_PAYLOAD_DEFAULT 65536u

/* Tokens are printable and need no JSON escaping (see shim_token_valid). */
#define SHIM_TOKEN_MIN 16u
#define SHIM_TOKEN_MAX 512u

typedef enum {
    SHIM_OK = 0,
    SHIM_ERR_DWDATA,    /* dwData is neither 1 nor 2 */
    SHIM_ERR_NULL,      /* lpData is NULL but cbData is not 0 */
    SHIM_ERR_EMPTY,     /* cbData is 0 */
    SHIM_ERR_TOO_LARGE, /* cbData over the limit (the bytes are never read) */
    SHIM_ERR_ODD,       /* cbData is odd: cannot be UTF-16 */
    SHIM_ERR_NO_NUL     /* the last code unit is not the NUL terminator */
} shim_status;

/*
 * Validate one WM_COPYDATA message before anything reads its payload.
 *
 * Reads at most the last two bytes of data[0..cb) and only after the size
 * checks passed, so a lying or hostile sender can never make us read past the
 * buffer Windows copied for us. On failure a one-line, human-readable reason
 * is written to why (always NUL-terminated when whycap > 0).
 */
shim_status shim_check_copydata(uint64_t dw_data, const void *data, size_t cb, size_t max_bytes,
                                char *why, size_t whycap);

/* Short stable name of a status ("odd_length", ...), for logs. */
const char *shim_status_name(shim_status status);

/* Base64 (RFC 4648, with padding) of n bytes: length without the NUL. */
size_t shim_b64_len(size_t n);

/*
 * Encode n bytes into out (NUL-terminated). Returns the length written, or
 * (size_t)-1 when cap cannot hold shim_b64_len(n) + 1 bytes.
 */
size_t shim_b64_encode(const unsigned char *in, size_t n, char *out, size_t cap);

/*
 * 1 if token is usable: SHIM_TOKEN_MIN..SHIM_TOKEN_MAX characters from
 * [A-Za-z0-9._~+/=-]. Restricting the alphabet means the token is copied into
 * JSON verbatim, with no escaping code to get wrong.
 */
int shim_token_valid(const char *token);

/*
 * The token from a token file's bytes: surrounding whitespace (a trailing
 * newline, CRLF from a Windows editor, a UTF-8 BOM) removed. Returns the
 * token's length, or 0 when the content is not a valid token.
 */
size_t shim_token_from_file(const char *text, size_t len, char *out, size_t cap);

/*
 * Request lines (newline included, NUL-terminated). Each returns the line's
 * length, or (size_t)-1 if cap is too small (or, for hello, the token is bad).
 */
size_t shim_build_hello(char *out, size_t cap, const char *token);
size_t shim_build_copydata(char *out, size_t cap, unsigned long id, uint64_t dw_data,
                           const unsigned char *payload, size_t cb);
size_t shim_build_command(char *out, size_t cap, unsigned long id, const char *cmd);

/* Capacity shim_build_copydata needs for a payload of cb bytes. */
size_t shim_copydata_request_size(size_t cb);

/* What the shim needs from one reply line. */
typedef struct {
    int ok;        /* 1: "ok":true, 0: "ok":false */
    int has_id;    /* 1 if "id" was an integer */
    long long id;  /* that integer */
    int truncated; /* 1 if the line ended before the object did */
    char code[64];     /* error.code ("" when absent) */
    char message[256]; /* error.message, UTF-8 ("" when absent), cut to fit */
} shim_reply;

/*
 * Parse one reply line of the control protocol. Returns 0 when "ok" was found
 * (even if the line was cut short after it: a reply longer than our buffer is
 * still a success or a failure), -1 when the line is not a usable reply.
 */
int shim_parse_reply(const char *line, size_t len, shim_reply *reply);

/*
 * Line assembly for a byte stream: feed received bytes, get whole lines.
 * A line longer than the buffer keeps its first cap-1 bytes (overflow = 1) and
 * the rest is discarded up to the newline, so one huge reply cannot wedge the
 * connection.
 */
typedef struct {
    char *buf;
    size_t cap; /* bytes in buf; a line holds at most cap - 1 of them */
    size_t len;
    int overflow;
    int complete; /* 1 when buf holds a whole line (NUL-terminated, no LF/CR) */
} shim_linebuf;

void shim_linebuf_init(shim_linebuf *lb, char *buf, size_t cap);
/*
 * Consume bytes from data until a line is complete or data runs out; returns
 * how many bytes were consumed. Check lb->complete afterwards; call
 * shim_linebuf_reset before assembling the next line.
 */
size_t shim_linebuf_feed(shim_linebuf *lb, const char *data, size_t n);
void shim_linebuf_reset(shim_linebuf *lb);

/* Length of a NUL-terminated UTF-16 string, in code units. */
size_t shim_u16len(const uint16_t *s);

/*
 * The arguments of a Windows command line: what MicroSIP's WinMain gets as
 * lpCmdLine. Same rule as the Microsoft C runtime: a program name starting
 * with a double quote runs to the next double quote (no escapes in argv[0]),
 * otherwise to the first space or control character; then every character
 * <= ' ' is skipped. The rest is returned untouched, quotes preserved.
 */
const uint16_t *shim_skip_program_name(const uint16_t *cmdline);

typedef enum {
    SHIM_LAUNCH_NONE,               /* no arguments */
    SHIM_LAUNCH_FORWARD,            /* send it to the running instance */
    SHIM_LAUNCH_EXIT,               /* "/exit" */
    SHIM_LAUNCH_MINIMIZED,          /* "/minimized" */
    SHIM_LAUNCH_NOOP_IF_NOT_RUNNING /* "/answer", "/hangupall" */
} shim_launch;

/*
 * What MicroSIP's second instance does with its arguments: exact,
 * case-sensitive, whole-string comparisons (MicroSIP uses lstrcmp), so
 * "/EXIT" or "/exit now" are forwarded like any other text.
 */
shim_launch shim_launcher_action(const uint16_t *args);

/*
 * A printable UTF-8 preview of a UTF-16LE payload for log lines: decoded up to
 * the first NUL code unit or cb bytes (an odd last byte is ignored), pairs
 * joined, lone surrogates as U+FFFD, control characters as '?', cut to fit
 * with "..." appended, and every "/password:<value>" (a MicroSIP command that
 * stores an account password) shown as "/password:***". Never reads past
 * data[cb).
 */
size_t shim_utf16_preview(const unsigned char *data, size_t cb, char *out, size_t cap);

/* A TCP port number from text ("5099"); -1 when not an integer in 1..65535. */
int shim_parse_port(const char *text);

#ifdef __cplusplus
}
#endif

#endif /* SHIM_CORE_H */

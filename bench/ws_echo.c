/*
 * ws_echo: the WebSocket echo upstream and the load client of bench/ws_bench.py.
 *
 * One single-threaded epoll program in two modes, so that neither the upstream nor the
 * client costs more than a few microseconds per message and both proxies are measured
 * against exactly the same two peers:
 *
 *   ws_echo server PORT
 *       Listens on 127.0.0.1:PORT. A request with "Upgrade: websocket" gets a 101
 *       (RFC 6455 section 4.2.2) and every data frame is echoed back, unmasked, with its
 *       opcode; ping gets pong, close gets close. Any other request gets a 200 with the
 *       bench body (the readiness probe of bench/proxy_bench.py).
 *
 *   ws_echo client PORT HOST COOKIE CONNS WARMUP_S DURATION_S SIZE [PID ...]
 *       Opens CONNS connections to 127.0.0.1:PORT, upgrades each (Host: HOST; COOKIE
 *       is sent as a Cookie header unless it is "-"), then each connection does
 *       sequential round trips: one masked binary frame of SIZE bytes, wait for the
 *       identical echo, next. The first WARMUP_S seconds are not counted. Over the
 *       measured DURATION_S it records every round trip's latency and reads the CPU
 *       time (utime+stime, /proc/PID/stat) of every PID given at the window's start and
 *       end. Prints one JSON object on stdout.
 *
 * Build: cc -O2 -o ws_echo ws_echo.c -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_BYTES 65536 /* per-connection input buffer; frames here are small */
#define MAX_PIDS 8
#define MAX_EVENTS 256
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 section 1.3 */
#define BODY "hello from the gatehouse bench upstream\n"

static void die(const char *what) {
    perror(what);
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nodelay_nonblock(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Write all of buf, waiting (poll-free spin on EAGAIN is fine: it never happens with
 * frames this small against an echo peer, and correctness does not depend on it). */
static int write_all(int fd, const unsigned char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Parse a frame header at buf[0..avail); returns header length or 0 if incomplete. */
static size_t frame_header(const unsigned char *buf, size_t avail, uint64_t *payload,
                           int *masked) {
    if (avail < 2) return 0;
    size_t hlen = 2;
    uint64_t len = buf[1] & 0x7f;
    *masked = (buf[1] & 0x80) != 0;
    if (len == 126) {
        if (avail < 4) return 0;
        len = ((uint64_t)buf[2] << 8) | buf[3];
        hlen = 4;
    } else if (len == 127) {
        if (avail < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++) len = (len << 8) | buf[2 + i];
        hlen = 10;
    }
    if (*masked) hlen += 4;
    if (avail < hlen) return 0;
    *payload = len;
    return hlen;
}

static size_t put_header(unsigned char *out, int opcode, uint64_t len, const unsigned char *mask) {
    size_t h = 0;
    out[h++] = (unsigned char)(0x80 | opcode);
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        out[h++] = (unsigned char)(m | len);
    } else if (len < 65536) {
        out[h++] = m | 126;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    } else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--) out[h++] = (unsigned char)(len >> (8 * i));
    }
    if (mask) {
        memcpy(out + h, mask, 4);
        h += 4;
    }
    return h;
}

/* ---------------------------------------------------------------------------------------
 * server */

struct sconn {
    int fd;
    int upgraded;
    size_t have;
    unsigned char buf[BUF_BYTES];
};

static int header_value(const char *head, const char *name, char *out, size_t cap) {
    size_t nlen = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ') v++;
            const char *end = strstr(v, "\r\n");
            size_t n = end ? (size_t)(end - v) : strlen(v);
            if (n >= cap) n = cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

/* Returns 0 to keep the connection, -1 to close it. */
static int server_handle_head(struct sconn *c, size_t head_len) {
    char head[8192];
    if (head_len >= sizeof head) return -1;
    memcpy(head, c->buf, head_len);
    head[head_len] = 0;
    char upgrade[64], key[128];
    char resp[512];
    int n;
    if (header_value(head, "Upgrade", upgrade, sizeof upgrade) &&
        strcasecmp(upgrade, "websocket") == 0 &&
        header_value(head, "Sec-WebSocket-Key", key, sizeof key)) {
        unsigned char digest[SHA_DIGEST_LENGTH];
        char joined[256];
        unsigned char accept[64];
        snprintf(joined, sizeof joined, "%s%s", key, WS_GUID);
        SHA1((unsigned char *)joined, strlen(joined), digest);
        EVP_EncodeBlock(accept, digest, SHA_DIGEST_LENGTH);
        n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
        c->upgraded = 1;
    } else {
        n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(BODY), BODY);
    }
    return write_all(c->fd, (unsigned char *)resp, (size_t)n);
}

/* Echo every complete frame in c->buf; returns -1 to close. */
static int server_frames(struct sconn *c) {
    size_t off = 0;
    unsigned char out[BUF_BYTES + 16];
    size_t olen = 0;
    int closing = 0;
    while (!closing) {
        uint64_t plen;
        int masked;
        size_t h = frame_header(c->buf + off, c->have - off, &plen, &masked);
        if (h == 0 || c->have - off < h + plen) break;
        if (plen > BUF_BYTES - 16) return -1;
        int opcode = c->buf[off] & 0x0f;
        unsigned char *payload = c->buf + off + h;
        if (masked) {
            const unsigned char *mask = payload - 4;
            for (uint64_t i = 0; i < plen; i++) payload[i] ^= mask[i & 3];
        }
        int reply = opcode == 0x9 ? 0xA : opcode; /* ping -> pong, else the same */
        if (opcode == 0xA) reply = -1;             /* pong: nothing */
        if (opcode == 0x8) closing = 1;
        if (reply >= 0) {
            if (olen + plen + 16 > sizeof out) {
                if (write_all(c->fd, out, olen) < 0) return -1;
                olen = 0;
            }
            olen += put_header(out + olen, reply, plen, NULL);
            memcpy(out + olen, payload, plen);
            olen += plen;
        }
        off += h + plen;
    }
    if (olen && write_all(c->fd, out, olen) < 0) return -1;
    memmove(c->buf, c->buf + off, c->have - off);
    c->have -= off;
    return closing ? -1 : 0;
}

static int run_server(int port) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    fprintf(stderr, "listening on 127.0.0.1:%d\n", port);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            struct sconn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept(lfd, NULL, NULL)) >= 0) {
                    nodelay_nonblock(fd);
                    struct sconn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int drop = 0;
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->have, BUF_BYTES - c->have);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    drop = 1;
                    break;
                }
                if (r < 0) break;
                c->have += (size_t)r;
                if (!c->upgraded) {
                    unsigned char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
                    if (end == NULL) {
                        if (c->have == BUF_BYTES) drop = 1;
                        if (drop) break;
                        continue;
                    }
                    size_t hl = (size_t)(end - c->buf) + 4;
                    if (server_handle_head(c, hl) < 0) {
                        drop = 1;
                        break;
                    }
                    memmove(c->buf, c->buf + hl, c->have - hl);
                    c->have -= hl;
                }
                if (c->upgraded && server_frames(c) < 0) {
                    drop = 1;
                    break;
                }
                if (c->have == BUF_BYTES) {
                    drop = 1;
                    break;
                }
            }
            if (drop) {
                close(c->fd);
                free(c);
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * client */

struct cconn {
    int fd;
    double sent_at;
    size_t have;
    size_t expect; /* bytes of the echoed frame (header + payload) */
    unsigned char buf[BUF_BYTES];
};

static double *lat;
static size_t nlat, caplat;

static void record(double us) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 16;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) die("realloc");
    }
    lat[nlat++] = us;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double cpu_of(int pid) {
    char path[64], text[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *p = strrchr(text, ')');
    if (!p) return -1;
    p += 2; /* now at field 3 (state) */
    unsigned long utime = 0, stime = 0;
    for (int field = 3; field <= 15 && p; field++) {
        if (field == 14) utime = strtoul(p, NULL, 10);
        if (field == 15) stime = strtoul(p, NULL, 10);
        p = strchr(p, ' ');
        if (p) p++;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static unsigned char frame[BUF_BYTES];
static size_t frame_len, echo_len;

static int client_send(struct cconn *c) {
    c->sent_at = now_s();
    c->have = 0;
    c->expect = echo_len;
    return write_all(c->fd, frame, frame_len);
}

static int client_connect(int port, const char *host, const char *cookie) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    char req[8192];
    char cookie_line[4096] = "";
    if (strcmp(cookie, "-") != 0) snprintf(cookie_line, sizeof cookie_line, "Cookie: %s\r\n", cookie);
    int n = snprintf(req, sizeof req,
                     "GET /echo HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     host, cookie_line);
    if (write_all(fd, (unsigned char *)req, (size_t)n) < 0) die("write handshake");
    char resp[8192];
    size_t have = 0;
    while (!memmem(resp, have, "\r\n\r\n", 4)) {
        ssize_t r = read(fd, resp + have, sizeof resp - have - 1);
        if (r <= 0) {
            fprintf(stderr, "handshake: connection closed after %zu bytes\n", have);
            exit(3);
        }
        have += (size_t)r;
    }
    resp[have] = 0;
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(resp, "\r\n");
        if (eol) *eol = 0;
        fprintf(stderr, "handshake refused: %s\n", resp);
        exit(3);
    }
    /* The 101's bytes only: the echo server sends nothing before our first frame. */
    nodelay_nonblock(fd);
    return fd;
}

static int run_client(int argc, char **argv) {
    int port = atoi(argv[2]);
    const char *host = argv[3], *cookie = argv[4];
    int conns = atoi(argv[5]);
    double warmup = atof(argv[6]), duration = atof(argv[7]);
    size_t size = (size_t)atol(argv[8]);
    int pids[MAX_PIDS], npids = 0;
    for (int i = 9; i < argc && npids < MAX_PIDS; i++) pids[npids++] = atoi(argv[i]);
    if (conns < 1 || size < 1 || size > BUF_BYTES - 32) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    /* One frame reused for every message: a fixed mask is allowed by the framing and
     * costs the proxies nothing either way (they do not unmask). */
    unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    frame_len = put_header(frame, 0x2, size, mask);
    for (size_t i = 0; i < size; i++) frame[frame_len + i] = (unsigned char)('a' + i % 26) ^ mask[i & 3];
    frame_len += size;
    unsigned char tmp[16];
    echo_len = put_header(tmp, 0x2, size, NULL) + size;

    struct cconn **cs = calloc((size_t)conns, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        cs[i] = calloc(1, sizeof **cs);
        cs[i]->fd = client_connect(port, host, cookie);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i]->fd, &ev);
    }
    for (int i = 0; i < conns; i++)
        if (client_send(cs[i]) < 0) die("send");

    double start = now_s();
    double measure_from = start + warmup, measure_to = measure_from + duration;
    int measuring = 0;
    double cpu0[MAX_PIDS], self0 = 0, t0 = 0;
    unsigned long errors = 0, messages = 0;
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        double t = now_s();
        if (!measuring && t >= measure_from) {
            measuring = 1;
            for (int i = 0; i < npids; i++) cpu0[i] = cpu_of(pids[i]);
            self0 = self_cpu();
            t0 = t;
        }
        if (t >= measure_to) break;
        int n = epoll_wait(ep, events, MAX_EVENTS, 100);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            struct cconn *c = events[i].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->have, BUF_BYTES - c->have);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                fprintf(stderr, "connection closed by the proxy mid-run\n");
                return 3;
            }
            if (r < 0) continue;
            c->have += (size_t)r;
            if (c->have < c->expect) continue;
            double done = now_s();
            size_t hlen = echo_len - size;
            if (c->have != c->expect || (c->buf[0] & 0x0f) != 0x2 ||
                memcmp(c->buf + hlen, "abcdefghijklmnopqrstuvwxyz", size < 26 ? size : 26) != 0)
                errors++;
            if (measuring && c->sent_at >= t0) {
                record((done - c->sent_at) * 1e6);
                messages++;
            }
            if (client_send(c) < 0) die("send");
        }
    }
    double t1 = now_s();
    double self1 = self_cpu();
    double cpu1[MAX_PIDS];
    for (int i = 0; i < npids; i++) cpu1[i] = cpu_of(pids[i]);
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)((double)nlat * 0.99)] : 0;
    double p999 = nlat ? lat[(size_t)((double)nlat * 0.999)] : 0, mx = nlat ? lat[nlat - 1] : 0;
    printf("{\"messages\": %lu, \"errors\": %lu, \"elapsed_s\": %.6f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, \"client_cpu_s\": %.4f, "
           "\"cpu_s\": {",
           messages, errors, t1 - t0, p50, p99, p999, mx, self1 - self0);
    for (int i = 0; i < npids; i++)
        printf("%s\"%d\": %.4f", i ? ", " : "", pids[i], cpu1[i] - cpu0[i]);
    printf("}}\n");
    for (int i = 0; i < conns; i++) close(cs[i]->fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "server") == 0) return run_server(atoi(argv[2]));
    if (argc >= 9 && strcmp(argv[1], "client") == 0) return run_client(argc, argv);
    fprintf(stderr,
            "usage: ws_echo server PORT\n"
            "       ws_echo client PORT HOST COOKIE CONNS WARMUP_S DURATION_S SIZE [PID ...]\n");
    return 2;
}

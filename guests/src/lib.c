/* lib.c - the few freestanding C library routines pvtest needs. */
#include "pvtest.h"

void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p - *q;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

/* Output buffer with truncation, for vsnprintf. */
struct obuf { char *p; size_t cap, len; };

static void oput(struct obuf *o, char c)
{
    if (o->len + 1 < o->cap)
        o->p[o->len] = c;
    o->len++;
}

static void onum(struct obuf *o, unsigned long v, unsigned base, int neg,
                 int width, char pad)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        tmp[n++] = '-';
    for (int w = n; w < width; w++)
        oput(o, pad);
    while (n)
        oput(o, tmp[--n]);
}

/* Supports %[0][width][l|ll|z]{d,i,u,x,p,s,c,%}. */
int vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap)
{
    struct obuf o = { buf, cap, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            oput(&o, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, lng = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            onum(&o, v < 0 ? -(unsigned long)v : (unsigned long)v, 10, v < 0,
                 width, pad);
            break;
        }
        case 'u':
            onum(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned),
                 10, 0, width, pad);
            break;
        case 'x':
            onum(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned),
                 16, 0, width, pad);
            break;
        case 'p':
            oput(&o, '0');
            oput(&o, 'x');
            onum(&o, (unsigned long)va_arg(ap, void *), 16, 0, width, pad);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            while (*s)
                oput(&o, *s++);
            break;
        }
        case 'c':
            oput(&o, (char)va_arg(ap, int));
            break;
        case '%':
            oput(&o, '%');
            break;
        default:
            oput(&o, '%');
            oput(&o, *fmt);
            break;
        }
    }
    if (cap)
        buf[o.len < cap ? o.len : cap - 1] = 0;
    return (int)o.len;
}

int snprintf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

/* The recorder's hot path in C: an optional speed-up, never a second behaviour.
 *
 * EventBuffer holds queued events as columns (C arrays, the payloads in one byte buffer) instead of
 * Python tuples, so that a flush hands pyarrow ready buffers rather than converting millions of
 * Python objects under the GIL. SessionCore.action is Session.action's common case (no call_id,
 * error or replay; status "ok") without the interpreter's per-call overhead. Everything it does not
 * handle, and every error, is passed to the pure-Python method, which decides; the canonical JSON and
 * the digest are the same functions' (orjson, xxh3) as the pure-Python path, so both paths write the
 * same bytes. Every append happens with no call back into Python between its first and last write,
 * so under the GIL an event is queued whole or not at all, whatever the other threads do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>

#define XXH_INLINE_ALL
#include "_vendor/xxhash.h" /* the xxHash the xxhash package wraps: the same digests (a test checks) */

#define NCOLS 17
#define NOBJ 9
#define MAXPIECES 8
/* columns after run_id, in schema order */
enum { C_SESSION, C_SEQ, C_STEP, C_PARENT, C_TS, C_KIND, C_ACTOR, C_PATTERN, C_NAME, C_MODEL, C_PROMPT,
       C_PAYLOAD, C_DIGEST, C_STATUS, C_LATENCY, C_TIN, C_TOUT };
static const int OBJ_COLS[NOBJ] = {C_SESSION, C_STEP, C_KIND, C_ACTOR, C_PATTERN, C_NAME, C_MODEL, C_PROMPT, C_STATUS};
/* which object columns may hold None */
static const int OBJ_NULLABLE[NOBJ] = {0, 1, 0, 0, 0, 0, 1, 1, 0};

/* set once by configure() */
static PyObject *g_dumps, *g_default, *g_options, *g_canonical;
static PyObject *s_ok, *s_gated, *s_chat;
static PyObject *s_kind[6], *s_general[6];
enum { K_INPUT, K_LLM, K_ACTION, K_GATE, K_EFFECT, K_STATE };
static const char *KIND_NAMES[6] = {"input", "llm", "action", "gate", "effect", "state"};

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, cap;
    PyObject **obj[NOBJ];
    int64_t *seq, *ts, *parent, *tin, *tout;
    uint64_t *digest;
    double *latency;
    char *v_parent, *v_latency, *v_tin, *v_tout; /* 1 = value present */
    int64_t *poff;                               /* n + 1 payload offsets */
    char *pdata;
    Py_ssize_t pcap;
    Py_ssize_t flush_rows;
    PyObject *wake;  /* called when n reaches flush_rows */
    PyObject *gated; /* called with the row tuple instead of appending while gate is set */
    char gate; /* T_BOOL writes one char */
    Py_ssize_t start; /* rows [start, n) are queued; drop() advances start instead of moving rows */
    PyObject *counters; /* session id -> Counter: the recorder's dict */
} EventBuffer;

/* Move the queued rows to the front: done only when the arrays are full and mostly dropped rows (see
 * grow), so a flush never moves the rows queued while it wrote (they were tens of megabytes per part,
 * moved under the GIL). */
static void compact(EventBuffer *b) {
    Py_ssize_t s0 = b->start, live = b->n - s0;
    if (s0 == 0) return;
    for (int k = 0; k < NOBJ; k++) memmove(b->obj[k], b->obj[k] + s0, live * sizeof(PyObject *));
#define SHIFT(field) memmove(b->field, b->field + s0, live * sizeof(*b->field))
    SHIFT(seq); SHIFT(ts); SHIFT(parent); SHIFT(tin); SHIFT(tout); SHIFT(digest); SHIFT(latency);
    SHIFT(v_parent); SHIFT(v_latency); SHIFT(v_tin); SHIFT(v_tout);
#undef SHIFT
    int64_t base = b->poff[s0];
    if (b->pdata) memmove(b->pdata, b->pdata + base, b->poff[b->n] - base);
    for (Py_ssize_t i = 0; i <= live; i++) b->poff[i] = b->poff[s0 + i] - base;
    b->n = live;
    b->start = 0;
}

static int grow(EventBuffer *b, Py_ssize_t need_rows, Py_ssize_t need_bytes) {
    /* compact only when at least half of the rows in the arrays are dropped ones: each move of a row
     * then pays for one dropped row, and a writer that lags cannot make every append move them all */
    if (b->start && b->start >= b->n - b->start && (b->n + need_rows > b->cap || b->poff[b->n] + need_bytes > b->pcap))
        compact(b);
    if (b->n + need_rows > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + need_rows) cap *= 2;
        for (int i = 0; i < NOBJ; i++) {
            PyObject **p = PyMem_Realloc(b->obj[i], cap * sizeof(PyObject *));
            if (!p) { PyErr_NoMemory(); return -1; }
            b->obj[i] = p;
        }
#define GROW(field, type)                                              \
        do {                                                           \
            type *p = PyMem_Realloc(b->field, cap * sizeof(type));     \
            if (!p) { PyErr_NoMemory(); return -1; }                   \
            b->field = p;                                              \
        } while (0)
        GROW(seq, int64_t); GROW(ts, int64_t); GROW(parent, int64_t); GROW(tin, int64_t); GROW(tout, int64_t);
        GROW(digest, uint64_t); GROW(latency, double);
        GROW(v_parent, char); GROW(v_latency, char); GROW(v_tin, char); GROW(v_tout, char);
#undef GROW
        int64_t *o = PyMem_Realloc(b->poff, (cap + 1) * sizeof(int64_t));
        if (!o) { PyErr_NoMemory(); return -1; }
        if (!b->poff) o[0] = 0;
        b->poff = o;
        b->cap = cap;
    }
    Py_ssize_t used = b->poff[b->n];
    if (used + need_bytes > b->pcap) {
        Py_ssize_t cap = b->pcap ? b->pcap : 65536;
        while (cap < used + need_bytes) cap *= 2;
        char *p = PyMem_Realloc(b->pdata, cap);
        if (!p) { PyErr_NoMemory(); return -1; }
        b->pdata = p;
        b->pcap = cap;
    }
    return 0;
}

/* One validated row, its objects borrowed; pushed by push() with no Python call in between. */
typedef struct {
    PyObject *obj[NOBJ];
    int64_t seq, ts, parent, tin, tout;
    uint64_t digest;
    double latency;
    char v_parent, v_latency, v_tin, v_tout;
    const char *payload[MAXPIECES];
    Py_ssize_t plen[MAXPIECES];
} Row;

static void push(EventBuffer *b, Row *r) { /* capacity already ensured */
    Py_ssize_t i = b->n;
    for (int k = 0; k < NOBJ; k++) {
        Py_INCREF(r->obj[k]);
        b->obj[k][i] = r->obj[k];
    }
    b->seq[i] = r->seq; b->ts[i] = r->ts; b->digest[i] = r->digest;
    b->parent[i] = r->parent; b->v_parent[i] = r->v_parent;
    b->tin[i] = r->tin; b->v_tin[i] = r->v_tin;
    b->tout[i] = r->tout; b->v_tout[i] = r->v_tout;
    b->latency[i] = r->latency; b->v_latency[i] = r->v_latency;
    int64_t at = b->poff[i];
    for (int k = 0; k < MAXPIECES; k++) {
        if (r->plen[k]) memcpy(b->pdata + at, r->payload[k], r->plen[k]);
        at += r->plen[k];
    }
    b->poff[i + 1] = at;
    b->n = i + 1;
}

/* Wake the writer once, when the queue reaches flush_rows (not at every event after: Event.set()
 * costs more than recording an event); the writer itself goes on while the queue stays that long. */
static int maybe_wake(EventBuffer *b, Py_ssize_t before) { /* before: the rows queued before */
    if (before < b->flush_rows && b->n - b->start >= b->flush_rows && b->wake && b->wake != Py_None) {
        PyObject *r = PyObject_CallNoArgs(b->wake);
        if (!r) return -1;
        Py_DECREF(r);
    }
    return 0;
}

static int opt_int(PyObject *o, int64_t *out, char *valid, const char *what) {
    if (o == Py_None) { *out = 0; *valid = 0; return 0; }
    if (!PyLong_Check(o)) { PyErr_Format(PyExc_TypeError, "%s must be an int or None", what); return -1; }
    *out = PyLong_AsLongLong(o);
    if (*out == -1 && PyErr_Occurred()) return -1;
    *valid = 1;
    return 0;
}

/* A row tuple as Session._put builds it (the columns after run_id) into a Row; objects borrowed. */
static int parse_row(PyObject *t, Row *r) {
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != NCOLS) {
        PyErr_Format(PyExc_TypeError, "an event row is a tuple of %d values", NCOLS);
        return -1;
    }
    for (int k = 0; k < NOBJ; k++) {
        PyObject *o = PyTuple_GET_ITEM(t, OBJ_COLS[k]);
        if (!(PyUnicode_CheckExact(o) || (OBJ_NULLABLE[k] && o == Py_None))) {
            PyErr_Format(PyExc_TypeError, "event column %d must be a string, not %.100s", OBJ_COLS[k],
                         Py_TYPE(o)->tp_name);
            return -1;
        }
        r->obj[k] = o;
    }
    char valid;
    if (opt_int(PyTuple_GET_ITEM(t, C_SEQ), &r->seq, &valid, "seq") < 0 || !valid) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "seq must be an int");
        return -1;
    }
    if (opt_int(PyTuple_GET_ITEM(t, C_TS), &r->ts, &valid, "ts") < 0 || !valid) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "ts must be an int");
        return -1;
    }
    if (opt_int(PyTuple_GET_ITEM(t, C_PARENT), &r->parent, &r->v_parent, "parent") < 0) return -1;
    if (opt_int(PyTuple_GET_ITEM(t, C_TIN), &r->tin, &r->v_tin, "tokens_in") < 0) return -1;
    if (opt_int(PyTuple_GET_ITEM(t, C_TOUT), &r->tout, &r->v_tout, "tokens_out") < 0) return -1;
    PyObject *d = PyTuple_GET_ITEM(t, C_DIGEST);
    if (!PyLong_Check(d)) { PyErr_SetString(PyExc_TypeError, "digest must be an int"); return -1; }
    r->digest = PyLong_AsUnsignedLongLong(d);
    if (r->digest == (uint64_t)-1 && PyErr_Occurred()) return -1;
    PyObject *lat = PyTuple_GET_ITEM(t, C_LATENCY);
    if (lat == Py_None) { r->latency = 0; r->v_latency = 0; }
    else {
        r->latency = PyFloat_AsDouble(lat);
        if (r->latency == -1.0 && PyErr_Occurred()) return -1;
        r->v_latency = 1;
    }
    PyObject *p = PyTuple_GET_ITEM(t, C_PAYLOAD);
    if (!PyBytes_Check(p)) { PyErr_SetString(PyExc_TypeError, "payload must be bytes"); return -1; }
    r->payload[0] = PyBytes_AS_STRING(p); r->plen[0] = PyBytes_GET_SIZE(p);
    for (int k = 1; k < MAXPIECES; k++) r->plen[k] = 0;
    return 0;
}

static PyObject *EventBuffer_append(EventBuffer *b, PyObject *row) {
    if (!b->gated) { PyErr_SetString(PyExc_RuntimeError, "EventBuffer used before __init__"); return NULL; }
    if (b->gate) return PyObject_CallOneArg(b->gated, row);
    Row r;
    if (parse_row(row, &r) < 0 || grow(b, 1, r.plen[0]) < 0) return NULL;
    Py_ssize_t before = b->n - b->start;
    push(b, &r);
    if (maybe_wake(b, before) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Rows held by a unit() block, flattened: appended all together, past the gate. */
static PyObject *EventBuffer_append_held(EventBuffer *b, PyObject *flat) {
    if (!PyList_CheckExact(flat) || PyList_GET_SIZE(flat) % NCOLS) {
        PyErr_SetString(PyExc_TypeError, "held rows are a flat list of whole rows");
        return NULL;
    }
    /* one tuple per row, each holding its values: checking a row may run Python code (a __float__),
     * which could change the list; what was checked stays alive until it is pushed */
    Py_ssize_t rows = PyList_GET_SIZE(flat) / NCOLS, bytes = 0, made = 0;
    Row *parsed = PyMem_Malloc((rows ? rows : 1) * sizeof(Row));
    PyObject **held = PyMem_Malloc((rows ? rows : 1) * sizeof(PyObject *));
    PyObject *all = PyList_AsTuple(flat);
    int failed = !parsed || !held || !all;
    if (!parsed || !held) PyErr_NoMemory();
    for (Py_ssize_t i = 0; !failed && i < rows; i++) {
        held[made] = PyTuple_GetSlice(all, i * NCOLS, (i + 1) * NCOLS);
        if (!held[made]) { failed = 1; break; }
        made++;
        if (parse_row(held[i], &parsed[i]) < 0) failed = 1;
        else bytes += parsed[i].plen[0];
    }
    Py_ssize_t before = b->n - b->start;
    if (!failed && grow(b, rows, bytes) == 0) {
        for (Py_ssize_t i = 0; i < rows; i++) push(b, &parsed[i]);
    } else failed = 1;
    for (Py_ssize_t i = 0; i < made; i++) Py_DECREF(held[i]);
    Py_XDECREF(all);
    PyMem_Free(held);
    PyMem_Free(parsed);
    if (failed || maybe_wake(b, before) < 0) return NULL;
    Py_RETURN_NONE;
}

/* ---- export: the queued rows as one Arrow record batch, through the Arrow C data interface ---------
 * (https://arrow.apache.org/docs/format/CDataInterface.html). pyarrow imports it with one call, so a
 * flush builds no Python objects and makes no pyarrow call per column: each such call releases and
 * re-takes the GIL, and every re-take waits up to the interpreter's switch interval (5 ms) while the
 * caller records. Buffers are malloc'd here and freed by the release callback, which needs no GIL. */

struct ArrowArray {
    int64_t length, null_count, offset, n_buffers, n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

static void release_array(struct ArrowArray *a) {
    for (int64_t i = 0; i < a->n_buffers; i++) free((void *)a->buffers[i]);
    free(a->buffers);
    for (int64_t i = 0; i < a->n_children; i++) {
        if (a->children[i]->release) a->children[i]->release(a->children[i]);
        free(a->children[i]);
    }
    free(a->children);
    if (a->dictionary) {
        if (a->dictionary->release) a->dictionary->release(a->dictionary);
        free(a->dictionary);
    }
    a->release = NULL;
}

/* An array owning its buffers (NULL entries are absent buffers); NULL when out of memory, and then
 * the buffers given are freed. */
static struct ArrowArray *new_array(int64_t length, int64_t null_count, int n_buffers, void **buffers) {
    struct ArrowArray *a = calloc(1, sizeof *a);
    const void **bufs = calloc(n_buffers, sizeof(void *));
    if (!a || !bufs) {
        free(a);
        free(bufs);
        for (int i = 0; i < n_buffers; i++) free(buffers[i]);
        return NULL;
    }
    for (int i = 0; i < n_buffers; i++) bufs[i] = buffers[i];
    a->length = length;
    a->null_count = null_count;
    a->n_buffers = n_buffers;
    a->buffers = bufs;
    a->release = release_array;
    return a;
}

/* A validity bitmap from one byte per row (1 = present); NULL with *nulls = 0 when all are present. */
static void *validity(const char *valid, Py_ssize_t n, int64_t *nulls, int *oom) {
    int64_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) count += !valid[i];
    *nulls = count;
    if (count == 0) return NULL;
    unsigned char *bits = calloc((n + 7) / 8 + 1, 1);
    if (!bits) { *oom = 1; return NULL; }
    for (Py_ssize_t i = 0; i < n; i++)
        if (valid[i]) bits[i >> 3] |= (unsigned char)(1u << (i & 7));
    return bits;
}

static void *copy_of(const void *data, size_t size) {
    void *out = malloc(size ? size : 1);
    if (out && size) memcpy(out, data, size);
    return out;
}

static struct ArrowArray *fixed_array(const void *data, const char *valid, Py_ssize_t n) {
    int64_t nulls = 0;
    int oom = 0;
    void *bits = valid ? validity(valid, n, &nulls, &oom) : NULL;
    void *values = copy_of(data, (size_t)n * 8);
    void *buffers[2] = {bits, values};
    if (oom || !values) { free(bits); free(values); return NULL; }
    return new_array(n, nulls, 2, buffers);
}

/* A string array of objects (str, or None = null), in one pass: a run of the same object (the
 * common case: one session, one actor) costs a memcpy. Adds the UTF-8 bytes to *text; when *text
 * would pass budget (at most 2 GiB) it stops early, sets *too_big and returns NULL, no exception. */
static struct ArrowArray *string_array(PyObject **col, Py_ssize_t n, int64_t budget, int64_t *text, int *too_big) {
    int32_t *off = malloc((n + 1) * sizeof(int32_t));
    size_t cap = (size_t)n * 8 + 64;
    char *data = malloc(cap), *valid = malloc(n ? n : 1);
    unsigned char *bits = NULL;
    int64_t nulls = 0, at = 0;
    int oom = !off || !data || !valid, failed = 0;
    PyObject *prev = NULL;
    const char *utf8 = NULL;
    Py_ssize_t len = 0;
    for (Py_ssize_t i = 0; !oom && !failed && i < n; i++) {
        off[i] = (int32_t)at;
        valid[i] = col[i] != Py_None;
        if (!valid[i]) continue;
        if (col[i] != prev) {
            if (!(utf8 = PyUnicode_AsUTF8AndSize(col[i], &len))) { failed = 1; break; }
            prev = col[i];
        }
        if (*text + at + len > budget) { *too_big = 1; failed = 1; break; } /* budget <= INT32_MAX */
        if ((size_t)(at + len) > cap) {
            while ((size_t)(at + len) > cap) cap *= 2;
            char *grown = realloc(data, cap);
            if (!grown) { oom = 1; break; }
            data = grown;
        }
        memcpy(data + at, utf8, len);
        at += len;
    }
    if (!oom && !failed) {
        off[n] = (int32_t)at;
        bits = validity(valid, n, &nulls, &oom);
    }
    free(valid);
    void *buffers[3] = {bits, off, data};
    if (oom || failed) {
        free(bits); free(off); free(data);
        if (oom) PyErr_NoMemory();
        return NULL;
    }
    *text += at;
    struct ArrowArray *a = new_array(n, nulls, 3, buffers);
    if (!a) PyErr_NoMemory();
    return a;
}

/* dictionary<int8, string>: the kind column */
static struct ArrowArray *kind_array(PyObject **col, Py_ssize_t n) {
    PyObject *seen[127];
    int count = 0;
    int8_t *codes = malloc(n ? n : 1);
    if (!codes) { PyErr_NoMemory(); return NULL; }
    PyObject *prev = NULL;
    int8_t prev_code = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = col[i];
        if (o != prev) {
            int j = 0;
            while (j < count && seen[j] != o && PyUnicode_Compare(seen[j], o) != 0) j++;
            if (j == count) {
                if (count == 127) {
                    free(codes);
                    PyErr_SetString(PyExc_ValueError, "more than 127 distinct event kinds in one part");
                    return NULL;
                }
                seen[count++] = o;
            }
            prev = o;
            prev_code = (int8_t)j;
        }
        codes[i] = prev_code;
    }
    int64_t text = 0;
    int too_big = 0;
    struct ArrowArray *dict = string_array(seen, count, INT32_MAX, &text, &too_big);
    void *buffers[2] = {NULL, codes};
    struct ArrowArray *a = dict ? new_array(n, 0, 2, buffers) : NULL;
    if (!a) {
        if (dict) { dict->release(dict); free(dict); } else free(codes);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    a->dictionary = dict;
    return a;
}

static struct ArrowArray *payload_array(EventBuffer *b, Py_ssize_t n) {
    int32_t *off = malloc((n + 1) * sizeof(int32_t));
    void *data = copy_of(b->pdata + b->poff[0], (size_t)(b->poff[n] - b->poff[0]));
    if (!off || !data) { free(off); free(data); return NULL; }
    for (Py_ssize_t i = 0; i <= n; i++) off[i] = (int32_t)(b->poff[i] - b->poff[0]);
    void *buffers[3] = {NULL, off, data};
    return new_array(n, 0, 3, buffers);
}

static void capsule_free(PyObject *capsule) {
    struct ArrowArray *a = PyCapsule_GetPointer(capsule, "sdb.arrow_array");
    if (a) {
        if (a->release) a->release(a); /* not imported */
        free(a);
    }
}

static void free_columns(struct ArrowArray **children) {
    if (!children) return;
    for (int k = 0; k <= NCOLS; k++)
        if (children[k]) { children[k]->release(children[k]); free(children[k]); }
    free(children);
}

/* The first n rows as NCOLS + 1 child arrays (run_id first) into *out; their text is added to *text.
 * Returns 1, or 0 with *too_big set (a column would pass 2 GiB; no exception) or an exception set.
 * Reads the queue and calls no Python code that could change it. */
static int build_columns(EventBuffer *b, const char *rid, Py_ssize_t rid_len, Py_ssize_t n, int64_t budget,
                         struct ArrowArray ***out, int64_t *text, int *too_big) {
    struct ArrowArray **children = calloc(NCOLS + 1, sizeof *children);
    *out = children;
    if (!children) { PyErr_NoMemory(); return 0; }
    if ((int64_t)rid_len * n + (b->poff[n] - b->poff[0]) > budget) { *too_big = 1; return 0; } /* nothing copied yet */
    *text += (int64_t)rid_len * n + (b->poff[n] - b->poff[0]);
    int32_t *roff = malloc((n + 1) * sizeof(int32_t)); /* run_id: one value, repeated */
    char *rdata = malloc(rid_len * n + 1);
    if (roff && rdata) {
        for (Py_ssize_t i = 0; i < n; i++) {
            roff[i] = (int32_t)(i * rid_len);
            memcpy(rdata + i * rid_len, rid, rid_len);
        }
        roff[n] = (int32_t)(n * rid_len);
        void *buffers[3] = {NULL, roff, rdata};
        children[0] = new_array(n, 0, 3, buffers);
    } else {
        free(roff);
        free(rdata);
    }
    if (!children[0]) { PyErr_NoMemory(); return 0; }
    for (int k = 0; k < NOBJ; k++) {
        int col = OBJ_COLS[k];
        children[col + 1] =
            col == C_KIND ? kind_array(b->obj[k], n) : string_array(b->obj[k], n, budget, text, too_big);
        if (!children[col + 1]) return 0;
    }
    int64_t *us = malloc(n * sizeof(int64_t));
    if (!us) { PyErr_NoMemory(); return 0; }
    for (Py_ssize_t i = 0; i < n; i++) us[i] = b->ts[i] / 1000; /* ns -> us */
    children[C_TS + 1] = fixed_array(us, NULL, n);
    free(us);
    children[C_SEQ + 1] = fixed_array(b->seq, NULL, n);
    children[C_DIGEST + 1] = fixed_array(b->digest, NULL, n);
    children[C_PARENT + 1] = fixed_array(b->parent, b->v_parent, n);
    children[C_TIN + 1] = fixed_array(b->tin, b->v_tin, n);
    children[C_TOUT + 1] = fixed_array(b->tout, b->v_tout, n);
    children[C_LATENCY + 1] = fixed_array(b->latency, b->v_latency, n);
    children[C_PAYLOAD + 1] = payload_array(b, n);
    for (int k = 0; k <= NCOLS; k++)
        if (!children[k]) { PyErr_NoMemory(); return 0; }
    return 1;
}

/* How many of the first rows one part can take: every string column of an Arrow batch holds under
 * 2 GiB (the rest waits for the next part). */
static Py_ssize_t rows_that_fit(EventBuffer *b, Py_ssize_t run_id_len, int64_t budget) {
    for (Py_ssize_t i = 0; i < b->n; i++) {
        int64_t row = (b->poff[i + 1] - b->poff[i]) + run_id_len;
        for (int k = 0; k < NOBJ; k++) {
            Py_ssize_t len = 0;
            if (OBJ_COLS[k] == C_KIND) continue; /* a dictionary of a few short names: not counted */
            if (b->obj[k][i] != Py_None && !PyUnicode_AsUTF8AndSize(b->obj[k][i], &len)) return -1;
            row += len;
        }
        budget -= row;
        if (budget < 0 && i == 0) {
            PyErr_Format(PyExc_ValueError, "an event of %lld bytes of text: over the 2 GiB an Arrow string column holds",
                         (long long)row);
            return -1;
        }
        if (budget < 0) return i;
    }
    return b->n;
}

/* Add the distinct values of an object column's first n rows to out, None left out. The column's
 * strings are exact str (parse_row and the fast paths see to it): hashing them runs no Python code,
 * so the column cannot move while this reads it. */
static int distinct(PyObject *out, PyObject **col, Py_ssize_t n) {
    PyObject *prev = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (col[i] == prev || col[i] == Py_None) continue;
        prev = col[i];
        if (PySet_Add(out, prev) < 0) return -1;
    }
    return 0;
}

/* The queued rows [start, n) seen as rows [0, n - start): a copy of the struct with its arrays offset
 * (payload offsets stay absolute: readers take them relative to poff[0]). Read-only. */
static EventBuffer queued_view(EventBuffer *b) {
    EventBuffer v = *b;
    Py_ssize_t s0 = b->start;
    for (int k = 0; k < NOBJ; k++) v.obj[k] = b->obj[k] + s0;
    v.seq = b->seq + s0; v.ts = b->ts + s0; v.parent = b->parent + s0; v.tin = b->tin + s0; v.tout = b->tout + s0;
    v.digest = b->digest + s0; v.latency = b->latency + s0;
    v.v_parent = b->v_parent + s0; v.v_latency = b->v_latency + s0; v.v_tin = b->v_tin + s0; v.v_tout = b->v_tout + s0;
    v.poff = b->poff + s0;
    v.n = b->n - s0;
    v.start = 0;
    return v;
}

/* export(run_id) -> (rows, address, capsule, (sessions, prompts, models)): the first rows as an
 * ArrowArray (a struct of the event columns, run_id first) at address, for
 * pyarrow.RecordBatch._import_from_c(address, EVENT_SCHEMA). The capsule owns the struct: keep it until
 * the import is done. The sets are the part's distinct session ids, prompts and models, for the
 * manifest. Nothing is removed (see drop). */
static PyObject *EventBuffer_export(EventBuffer *queue, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t rid_len;
    long long budget = INT32_MAX;
    if (nargs < 1 || nargs > 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "export(run_id: str, text_limit: int = 2**31 - 1)");
        return NULL;
    }
    if (nargs == 2 && ((budget = PyLong_AsLongLong(args[1])) == -1 && PyErr_Occurred())) return NULL;
    if (budget > INT32_MAX) budget = INT32_MAX;
    const char *rid = PyUnicode_AsUTF8AndSize(args[0], &rid_len);
    if (!rid) return NULL;
    if (queue->n - queue->start == 0) return Py_BuildValue("(nOOO)", (Py_ssize_t)0, Py_None, Py_None, Py_None);
    /* every Python object this needs is made first: making one may start a garbage collection,
     * whose finalisers may record events and so move the columns read below */
    PyObject *sessions = PySet_New(NULL), *prompts = PySet_New(NULL), *models = PySet_New(NULL);
    if (!sessions || !prompts || !models) { Py_XDECREF(sessions); Py_XDECREF(prompts); Py_XDECREF(models); return NULL; }
    /* all the rows if their text fits (found while building, in one pass), else the rows that fit;
     * nothing below runs Python code, so the view stays valid */
    EventBuffer view = queued_view(queue), *b = &view;
    Py_ssize_t n = b->n;
    struct ArrowArray **children = NULL;
    int64_t text = 0;
    int too_big = 0, ok = build_columns(b, rid, rid_len, n, budget, &children, &text, &too_big);
    if (too_big) {
        free_columns(children);
        children = NULL;
        n = rows_that_fit(b, rid_len, budget);
        text = 0;
        too_big = 0;
        ok = n > 0 && build_columns(b, rid, rid_len, n, budget, &children, &text, &too_big) && !too_big;
    }
    if (!ok) {
        free_columns(children);
        Py_DECREF(sessions); Py_DECREF(prompts); Py_DECREF(models);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    /* the last reads of the queue come before the capsule is made: from Python 3.12 capsules are
     * tracked objects, so making one may start a garbage collection, which may record events */
    if (distinct(sessions, b->obj[0], n) < 0 || distinct(prompts, b->obj[7], n) < 0 || distinct(models, b->obj[6], n) < 0) {
        free_columns(children);
        Py_DECREF(sessions); Py_DECREF(prompts); Py_DECREF(models);
        return NULL;
    }
    void *none[1] = {NULL};
    struct ArrowArray *top = new_array(n, 0, 1, none);
    if (!top) {
        free_columns(children);
        Py_DECREF(sessions); Py_DECREF(prompts); Py_DECREF(models);
        return PyErr_NoMemory();
    }
    top->n_children = NCOLS + 1;
    top->children = children;
    PyObject *capsule = PyCapsule_New(top, "sdb.arrow_array", capsule_free);
    if (!capsule) { top->release(top); free(top); Py_DECREF(sessions); Py_DECREF(prompts); Py_DECREF(models); return NULL; }
    return Py_BuildValue("(nKN(NNN))", n, (unsigned long long)(uintptr_t)top, capsule, sessions, prompts, models);
}

/* Remove the first n rows (published by the caller); rows queued since stay. */
static PyObject *EventBuffer_drop(EventBuffer *b, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0 || n > b->n - b->start) { PyErr_SetString(PyExc_ValueError, "drop: more rows than queued"); return NULL; }
    /* the queue is made whole first and the dropped values released last: releasing a value must
     * never see a queue in the middle of a change */
    PyObject **dropped = PyMem_Malloc(n ? n * NOBJ * sizeof(PyObject *) : 1);
    if (!dropped) return PyErr_NoMemory();
    for (int k = 0; k < NOBJ; k++) memcpy(dropped + k * n, b->obj[k] + b->start, n * sizeof(PyObject *));
    b->start += n;
    if (b->start == b->n) { /* empty: start again at the front, nothing to move */
        b->start = b->n = 0;
        if (b->poff) b->poff[0] = 0;
    }
    for (Py_ssize_t i = 0; i < n * NOBJ; i++) Py_DECREF(dropped[i]);
    PyMem_Free(dropped);
    Py_RETURN_NONE;
}

static Py_ssize_t EventBuffer_len(EventBuffer *b) { return b->n - b->start; }

static PyTypeObject CounterType;

/* The seq counter of a session, made on first use: one dict lookup, atomic under the GIL (nothing in
 * it runs Python code), so two threads opening one session get one counter. */
static PyObject *EventBuffer_counter(EventBuffer *b, PyObject *session_id) {
    if (!b->counters) { PyErr_SetString(PyExc_RuntimeError, "EventBuffer used before __init__"); return NULL; }
    if (!PyUnicode_CheckExact(session_id)) { PyErr_SetString(PyExc_TypeError, "a session id is a str"); return NULL; }
    PyObject *c = PyDict_GetItemWithError(b->counters, session_id);
    if (c) return Py_NewRef(c);
    if (PyErr_Occurred()) return NULL;
    if (!(c = PyType_GenericNew(&CounterType, NULL, NULL))) return NULL;
    if (PyDict_SetItem(b->counters, session_id, c) < 0) { Py_DECREF(c); return NULL; }
    return c;
}

static int EventBuffer_init(EventBuffer *b, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"flush_rows", "wake", "gated", "counters", NULL};
    Py_ssize_t rows;
    PyObject *wake, *gated, *counters = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nOO|O!", kwlist, &rows, &wake, &gated, &PyDict_Type, &counters))
        return -1;
    if (counters) Py_INCREF(counters);
    else if (!(counters = PyDict_New())) return -1;
    Py_XSETREF(b->counters, counters);
    b->flush_rows = rows;
    Py_INCREF(wake); Py_XSETREF(b->wake, wake);
    Py_INCREF(gated); Py_XSETREF(b->gated, gated);
    return 0;
}

static int EventBuffer_traverse(EventBuffer *b, visitproc visit, void *arg) {
    Py_VISIT(b->counters);
    Py_VISIT(b->wake);
    Py_VISIT(b->gated);
    return 0;
}

static int EventBuffer_clear(EventBuffer *b) {
    Py_CLEAR(b->counters);
    Py_CLEAR(b->wake);
    Py_CLEAR(b->gated);
    return 0;
}

static void EventBuffer_dealloc(EventBuffer *b) {
    PyObject_GC_UnTrack(b);
    for (int k = 0; k < NOBJ; k++) {
        for (Py_ssize_t i = b->start; i < b->n; i++) Py_DECREF(b->obj[k][i]);
        PyMem_Free(b->obj[k]);
    }
    PyMem_Free(b->seq); PyMem_Free(b->ts); PyMem_Free(b->parent); PyMem_Free(b->tin); PyMem_Free(b->tout);
    PyMem_Free(b->digest); PyMem_Free(b->latency); PyMem_Free(b->v_parent); PyMem_Free(b->v_latency);
    PyMem_Free(b->v_tin); PyMem_Free(b->v_tout); PyMem_Free(b->poff); PyMem_Free(b->pdata);
    EventBuffer_clear(b);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyMethodDef EventBuffer_methods[] = {
    {"append", (PyCFunction)EventBuffer_append, METH_O, "Queue one row (a tuple of the columns after run_id)."},
    {"append_held", (PyCFunction)EventBuffer_append_held, METH_O, "Queue the flattened rows of a unit() block at once."},
    {"export", (PyCFunction)(void (*)(void))EventBuffer_export, METH_FASTCALL, "The first rows as an Arrow C array: (rows, address, capsule)."},
    {"drop", (PyCFunction)EventBuffer_drop, METH_O, "Remove the first n rows."},
    {"counter", (PyCFunction)EventBuffer_counter, METH_O, "The seq counter of a session (made on first use)."},
    {NULL}};

static PyMemberDef EventBuffer_members[] = {
    {"gate", T_BOOL, offsetof(EventBuffer, gate), 0, "While set, append() hands rows to `gated` instead."},
    {NULL}};

static PySequenceMethods EventBuffer_as_sequence = {.sq_length = (lenfunc)EventBuffer_len};

static PyTypeObject EventBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sdbctl.sdb._native.EventBuffer",
    .tp_basicsize = sizeof(EventBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The recorder's queue of events, as columns.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)EventBuffer_init,
    .tp_dealloc = (destructor)EventBuffer_dealloc,
    .tp_traverse = (traverseproc)EventBuffer_traverse,
    .tp_clear = (inquiry)EventBuffer_clear,
    .tp_methods = EventBuffer_methods,
    .tp_members = EventBuffer_members,
    .tp_as_sequence = &EventBuffer_as_sequence,
};

/* A session's seq counter: callable, returns 0, 1, 2, ... Under the GIL each call is atomic. Not
 * tracked by the garbage collector (it holds no objects), so a recorder with a million sessions adds
 * nothing to the collector's work. */
typedef struct {
    PyObject_HEAD
    int64_t next;
} Counter;

static int Counter_init(Counter *c, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"start", NULL};
    long long start = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|L", kwlist, &start)) return -1;
    c->next = start;
    return 0;
}

static PyObject *Counter_call(Counter *c, PyObject *args, PyObject *kwds) {
    return PyLong_FromLongLong(c->next++);
}

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sdbctl.sdb._native.Counter",
    .tp_basicsize = sizeof(Counter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Counter(start=0)(): the next seq of a session.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Counter_init,
    .tp_call = (ternaryfunc)Counter_call,
};

/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    EventBuffer *buffer;
    PyObject *recorder, *session_id, *actor, *pattern, *next_seq, *clock;
    int system_clock; /* clock is time.time_ns: read the clock here, no call */
} SessionCore;

static PyObject *g_time_ns, *s_queue, *s_clock;

static int SessionCore_traverse(SessionCore *s, visitproc visit, void *arg) {
    Py_VISIT(s->buffer); Py_VISIT(s->recorder); Py_VISIT(s->session_id); Py_VISIT(s->actor); Py_VISIT(s->pattern);
    Py_VISIT(s->next_seq); Py_VISIT(s->clock);
    return 0;
}

static int SessionCore_clear(SessionCore *s) {
    Py_CLEAR(s->buffer); Py_CLEAR(s->recorder); Py_CLEAR(s->session_id); Py_CLEAR(s->actor); Py_CLEAR(s->pattern);
    Py_CLEAR(s->next_seq); Py_CLEAR(s->clock);
    return 0;
}

static void SessionCore_dealloc(SessionCore *s) {
    PyObject_GC_UnTrack(s);
    SessionCore_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* SessionCore(recorder, session_id, actor, pattern): the recorder's queue, the session's seq counter
 * (recorder._counter) and the recorder's clock. */
static int SessionCore_init(SessionCore *s, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"recorder", "session_id", "actor", "pattern", NULL};
    PyObject *recorder, *session_id, *actor, *pattern;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OUUU", kwlist, &recorder, &session_id, &actor, &pattern)) return -1;
    if (!PyUnicode_CheckExact(session_id) || !PyUnicode_CheckExact(actor) || !PyUnicode_CheckExact(pattern)) {
        PyErr_SetString(PyExc_TypeError, "session id, actor and pattern must be str (not a subclass)");
        return -1;
    }
    PyObject *queue = PyObject_GetAttr(recorder, s_queue);
    if (!queue) return -1;
    if (!PyObject_TypeCheck(queue, &EventBufferType)) {
        Py_DECREF(queue);
        PyErr_SetString(PyExc_TypeError, "the recorder's queue is not an EventBuffer");
        return -1;
    }
    PyObject *next_seq = EventBuffer_counter((EventBuffer *)queue, session_id);
    if (!next_seq) { Py_DECREF(queue); return -1; }
    PyObject *clock = PyObject_GetAttr(recorder, s_clock);
    if (!clock) { Py_DECREF(queue); Py_DECREF(next_seq); return -1; }
    Py_XSETREF(s->buffer, (EventBuffer *)queue);
    Py_XSETREF(s->next_seq, next_seq);
    Py_XSETREF(s->clock, clock);
    s->system_clock = clock == g_time_ns;
    Py_INCREF(recorder); Py_XSETREF(s->recorder, recorder);
    Py_INCREF(session_id); Py_XSETREF(s->session_id, session_id);
    Py_INCREF(actor); Py_XSETREF(s->actor, actor);
    Py_INCREF(pattern); Py_XSETREF(s->pattern, pattern);
    return 0;
}

/* The pure-Python method (Session._<kind>_py) for everything a fast path does not take: it decides,
 * and raises the precise error. */
static PyObject *general(int kind, PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *fn = PyObject_GetAttr((PyObject *)Py_TYPE(self), s_general[kind]);
    if (!fn) return NULL;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject **all = PyMem_Malloc((nargs + nk + 1) * sizeof(PyObject *));
    if (!all) { Py_DECREF(fn); return PyErr_NoMemory(); }
    all[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nk; i++) all[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(fn, all, nargs + 1, kwnames);
    PyMem_Free(all);
    Py_DECREF(fn);
    return r;
}

static int no_integral_float(const char *s, Py_ssize_t n) {
    if (memchr(s, '+', n)) return 0;
    const char *end = s + n;
    for (const char *p = memchr(s, '.', n); p; p = memchr(p + 1, '.', end - p - 1)) { /* dot to dot */
        if (p + 1 < end && p[1] == '0') {
            if (p + 2 == end) return 0;
            char c = p[2];
            if (c == ',' || c == '}' || c == ']') return 0;
        }
        if (p + 1 >= end) break;
    }
    return 1;
}

/* "null" somewhere in the text (memmem is not in every C library) */
static int has_null(const char *s, Py_ssize_t n) {
    const char *end = s + n;
    for (const char *p = memchr(s, 'n', n); p && end - p >= 4; p = memchr(p + 1, 'n', end - p - 1))
        if (p[1] == 'u' && p[2] == 'l' && p[3] == 'l') return 1;
    return 0;
}

static PyObject *dumps(PyObject *value) {
    PyObject *argv[3] = {value, g_default, g_options};
    return PyObject_Vectorcall(g_dumps, argv, 3, NULL);
}

/* 1 if an integral float (which canonical JSON writes as an int) is somewhere in value, 0 if none is,
 * -1 if value holds NaN or an infinity (which the Python function refuses), or a type other than exact
 * dict, list, tuple, str, int, bool, None and float (or is too deep): then orjson's default hook and
 * the Python function decide. */
static int scan(PyObject *v, int depth) {
    if (PyUnicode_CheckExact(v) || PyLong_CheckExact(v) || PyBool_Check(v) || v == Py_None) return 0;
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d)) return -1;
        return floor(d) == d;
    }
    if (depth > 100) return -1;
    int found = 0, r;
    if (PyDict_CheckExact(v)) {
        Py_ssize_t pos = 0;
        PyObject *k, *item;
        while (PyDict_Next(v, &pos, &k, &item)) {
            if ((r = scan(item, depth + 1)) < 0) return -1;
            found |= r;
        }
        return found;
    }
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        PyObject **items = PySequence_Fast_ITEMS(v);
        for (Py_ssize_t i = 0; i < n; i++) {
            if ((r = scan(items[i], depth + 1)) < 0) return -1;
            found |= r;
        }
        return found;
    }
    return -1;
}

/* canonical._normalise for a value scan() accepted: integral floats in int64 range become ints. */
static PyObject *normalise(PyObject *v) {
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        if (isfinite(d) && floor(d) == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
            return PyLong_FromDouble(d);
        Py_INCREF(v);
        return v;
    }
    if (PyDict_CheckExact(v)) {
        PyObject *out = PyDict_New(), *k, *item;
        Py_ssize_t pos = 0;
        if (!out) return NULL;
        while (PyDict_Next(v, &pos, &k, &item)) {
            PyObject *x = normalise(item);
            if (!x || PyDict_SetItem(out, k, x) < 0) { Py_XDECREF(x); Py_DECREF(out); return NULL; }
            Py_DECREF(x);
        }
        return out;
    }
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        PyObject **items = PySequence_Fast_ITEMS(v);
        PyObject *out = PyList_New(n);
        if (!out) return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *x = normalise(items[i]);
            if (!x) { Py_DECREF(out); return NULL; }
            PyList_SET_ITEM(out, i, x);
        }
        return out;
    }
    Py_INCREF(v);
    return v;
}

/* canonical.canonical_bytes: the same bytes; errors are the Python function's to raise. orjson's text
 * is canonical when it shows no integral float and no null (the common case, found by a scan of the
 * text: orjson writes NaN and the infinities as null, and canonical JSON refuses them); when it
 * might, a walk of the value decides, and a copy with those floats as ints is dumped instead. A key
 * that is not a string fails the dump (the options have no OPT_NON_STR_KEYS): Python decides. */
static PyObject *canonical(PyObject *value) {
    PyObject *out = dumps(value);
    if (!out) { /* not JSON, or not only string keys: the Python function writes it or says why not */
        PyErr_Clear();
        return PyObject_CallOneArg(g_canonical, value);
    }
    const char *text = PyBytes_AS_STRING(out);
    Py_ssize_t size = PyBytes_GET_SIZE(out);
    if (no_integral_float(text, size) && !has_null(text, size)) return out;
    int r = scan(value, 0);
    if (r == 0) return out; /* the ".0" or the null was inside a string, or a null is a None */
    Py_DECREF(out);
    /* NaN or an infinity (refused), or types only orjson's default knows: the Python function decides */
    if (r < 0) return PyObject_CallOneArg(g_canonical, value);
    PyObject *norm = normalise(value);
    if (!norm) return NULL;
    out = dumps(norm);
    Py_DECREF(norm);
    return out;
}

static PyObject *canonical_bytes(PyObject *mod, PyObject *value) { return canonical(value); }

/* Arguments: positional ones in order, then keywords by name. Returns 0, or 1 when something is not
 * for a fast path (too many positionals, a keyword it does not know): the Python method decides. */
static int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *const *names,
                      PyObject **interned, int npos, int nall, PyObject **out) {
    if (nargs > npos) return 1;
    for (int i = 0; i < nall; i++) out[i] = NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nk && !interned[0]) {
        for (int j = 0; j < nall; j++)
            if (!(interned[j] = PyUnicode_InternFromString(names[j]))) return -1;
    }
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int j = 0;
        while (j < nall && key != interned[j]) j++; /* keywords in code are interned: one compare each */
        if (j == nall) {
            j = 0;
            while (j < nall && PyUnicode_CompareWithASCIIString(key, names[j]) != 0) j++;
        }
        if (j == nall || out[j]) return 1;
        out[j] = args[nargs + i];
    }
    return 0;
}

#define OR_NONE(x) ((x) ? (x) : Py_None)
#define IS_STR_OR_NONE(x) (!(x) || (x) == Py_None || PyUnicode_CheckExact(x))

/* One event as a fast path has checked it; objects borrowed from the call. */
typedef struct {
    int kind;
    PyObject *name, *step, *parent, *actor, *pattern, *status, *model, *prompt, *latency, *tin, *tout;
    const char *digest_body; /* hashed with the name */
    Py_ssize_t digest_len;
    const char *pieces[MAXPIECES];
    Py_ssize_t plen[MAXPIECES];
    int npieces;
} Event;

static void piece(Event *e, const char *p, Py_ssize_t n) {
    e->pieces[e->npieces] = p;
    e->plen[e->npieces++] = n;
}

static void piece_bytes(Event *e, PyObject *bytes) { piece(e, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes)); }

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* canonical.digest: xxh3-64 of name, a NUL byte, and body */
static uint64_t keyed_digest(const char *name, Py_ssize_t name_len, const char *body, Py_ssize_t body_len) {
    char stack[4096];
    Py_ssize_t len = name_len + 1 + body_len;
    char *buf = len <= (Py_ssize_t)sizeof(stack) ? stack : PyMem_Malloc(len);
    if (!buf) { PyErr_NoMemory(); return 0; }
    memcpy(buf, name, name_len);
    buf[name_len] = 0;
    memcpy(buf + name_len + 1, body, body_len);
    uint64_t h = XXH3_64bits(buf, (size_t)len);
    if (buf != stack) PyMem_Free(buf);
    return h;
}

static PyObject *digest_fn(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t name_len;
    const char *name;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "digest(name: str, body: bytes)");
        return NULL;
    }
    if (!(name = PyUnicode_AsUTF8AndSize(args[0], &name_len))) return NULL;
    uint64_t h = keyed_digest(name, name_len, PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]));
    if (h == 0 && PyErr_Occurred()) return NULL;
    return PyLong_FromUnsignedLongLong(h);
}

/* Digest, seq, time, and the row queued: what Session._put does. Returns the seq (a new reference),
 * or NULL with an exception set. Nothing calls back into Python after the gate is read. */
static PyObject *emit(SessionCore *s, Event *e) {
    Py_ssize_t name_len;
    const char *name_utf8 = PyUnicode_AsUTF8AndSize(e->name, &name_len);
    if (!name_utf8) return NULL;
    uint64_t digest = keyed_digest(name_utf8, name_len, e->digest_body, e->digest_len);
    if (digest == 0 && PyErr_Occurred()) return NULL;
    Row r;
    char ok;
    if (opt_int(OR_NONE(e->parent), &r.parent, &r.v_parent, "parent") < 0) return NULL;
    if (opt_int(OR_NONE(e->tin), &r.tin, &r.v_tin, "tokens_in") < 0) return NULL;
    if (opt_int(OR_NONE(e->tout), &r.tout, &r.v_tout, "tokens_out") < 0) return NULL;
    if (!e->latency || e->latency == Py_None) { r.latency = 0; r.v_latency = 0; }
    else {
        r.latency = PyFloat_AsDouble(e->latency);
        if (r.latency == -1.0 && PyErr_Occurred()) return NULL;
        r.v_latency = 1;
    }
    PyObject *seq_obj = Py_IS_TYPE(s->next_seq, &CounterType) ? PyLong_FromLongLong(((Counter *)s->next_seq)->next++)
                                                               : PyObject_CallNoArgs(s->next_seq);
    if (!seq_obj) return NULL;
    if (opt_int(seq_obj, &r.seq, &ok, "seq") < 0) { Py_DECREF(seq_obj); return NULL; }
    if (s->system_clock) r.ts = now_ns();
    else {
        PyObject *t = PyObject_CallNoArgs(s->clock);
        if (!t) { Py_DECREF(seq_obj); return NULL; }
        r.ts = PyLong_AsLongLong(t);
        Py_DECREF(t);
        if (r.ts == -1 && PyErr_Occurred()) { Py_DECREF(seq_obj); return NULL; }
    }
    r.digest = digest;
    PyObject *actor = (!e->actor || e->actor == Py_None || PyUnicode_GET_LENGTH(e->actor) == 0) ? s->actor : e->actor;
    PyObject *pattern =
        (!e->pattern || e->pattern == Py_None || PyUnicode_GET_LENGTH(e->pattern) == 0) ? s->pattern : e->pattern;
    r.obj[0] = s->session_id; r.obj[1] = OR_NONE(e->step); r.obj[2] = s_kind[e->kind]; r.obj[3] = actor;
    r.obj[4] = pattern; r.obj[5] = e->name; r.obj[6] = OR_NONE(e->model); r.obj[7] = OR_NONE(e->prompt);
    r.obj[8] = e->status;
    Py_ssize_t total = 0;
    for (int k = 0; k < MAXPIECES; k++) {
        r.payload[k] = k < e->npieces ? e->pieces[k] : NULL;
        r.plen[k] = k < e->npieces ? e->plen[k] : 0;
        total += r.plen[k];
    }
    EventBuffer *b = s->buffer;
    if (b->gate) { /* closed, or a unit() block is open: the recorder's Python path decides */
        PyObject *payload = PyBytes_FromStringAndSize(NULL, total);
        if (!payload) { Py_DECREF(seq_obj); return NULL; }
        char *pp = PyBytes_AS_STRING(payload);
        for (int k = 0; k < MAXPIECES; k++) {
            if (r.plen[k]) memcpy(pp, r.payload[k], r.plen[k]);
            pp += r.plen[k];
        }
        PyObject *row = Py_BuildValue("(OOONNOOOOOONKONNN)", s->session_id, seq_obj, r.obj[1],
                                      r.v_parent ? PyLong_FromLongLong(r.parent) : Py_NewRef(Py_None),
                                      PyLong_FromLongLong(r.ts), r.obj[2], actor, pattern, e->name, r.obj[6], r.obj[7],
                                      payload, (unsigned long long)digest, e->status,
                                      r.v_latency ? PyFloat_FromDouble(r.latency) : Py_NewRef(Py_None),
                                      r.v_tin ? PyLong_FromLongLong(r.tin) : Py_NewRef(Py_None),
                                      r.v_tout ? PyLong_FromLongLong(r.tout) : Py_NewRef(Py_None));
        if (!row) { Py_DECREF(seq_obj); return NULL; }
        PyObject *res = PyObject_CallOneArg(b->gated, row);
        Py_DECREF(row);
        if (!res) { Py_DECREF(seq_obj); return NULL; }
        Py_DECREF(res);
        return seq_obj;
    }
    if (grow(b, 1, total) < 0) { Py_DECREF(seq_obj); return NULL; }
    Py_ssize_t before = b->n - b->start;
    push(b, &r);
    if (maybe_wake(b, before) < 0) { Py_DECREF(seq_obj); return NULL; }
    return seq_obj;
}

/* The checks every fast path shares (Session._put's): else the Python method raises the error. */
static int encodable(PyObject *text) { /* None, or a str with a UTF-8 form (no lone surrogate) */
    if (!text || text == Py_None) return 1;
    if (PyUnicode_AsUTF8AndSize(text, NULL)) return 1;
    PyErr_Clear();
    return 0;
}

static int common_ok(Event *e) {
    if (!(PyUnicode_CheckExact(e->name) && IS_STR_OR_NONE(e->step) &&
          (!e->parent || e->parent == Py_None || PyLong_CheckExact(e->parent)) && IS_STR_OR_NONE(e->actor) &&
          IS_STR_OR_NONE(e->pattern)))
        return 0;
    if (e->parent && e->parent != Py_None) {
        int overflow;
        PyLong_AsLongLongAndOverflow(e->parent, &overflow);
        if (overflow) return 0;
    }
    return encodable(e->name) && encodable(e->step) && encodable(e->actor) && encodable(e->pattern) &&
           encodable(e->model) && encodable(e->prompt);
}

static int is_ok(PyObject *status) {
    return !status || (PyUnicode_CheckExact(status) && PyUnicode_Compare(status, s_ok) == 0);
}

#define FAST_OR_GENERAL(kind)                                                                             \
    static PyObject *INTERNED[sizeof(NAMES) / sizeof(*NAMES)];                                            \
    PyObject *argv[sizeof(NAMES) / sizeof(*NAMES)];                                                       \
    int parsed = s->buffer ? parse_args(args, PyVectorcall_NARGS(nargsf), kwnames, NAMES, INTERNED, NPOS, \
                                        (int)(sizeof(NAMES) / sizeof(*NAMES)), argv)                      \
                           : 1;                                                                           \
    if (parsed < 0) return NULL;                                                                          \
    if (parsed) return general(kind, (PyObject *)s, args, PyVectorcall_NARGS(nargsf), kwnames);

#define GENERAL(kind) general(kind, (PyObject *)s, args, PyVectorcall_NARGS(nargsf), kwnames)

/* input/state: the payload is the canonical value itself */
static PyObject *plain_event(SessionCore *s, int kind, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    static const char *const NAMES[] = {"name", "payload", "step", "parent", "actor", "pattern"};
    enum { NPOS = 2 };
    FAST_OR_GENERAL(kind)
    if (!argv[0] || !argv[1] || (kind == K_INPUT && argv[3])) return GENERAL(kind);
    Event e = {.kind = kind, .name = argv[0], .step = argv[2], .parent = argv[3], .actor = argv[4],
               .pattern = argv[5], .status = s_ok};
    if (!common_ok(&e)) return GENERAL(kind);
    PyObject *body = canonical(argv[1]);
    if (!body) { PyErr_Clear(); return GENERAL(kind); }
    e.digest_body = PyBytes_AS_STRING(body); e.digest_len = PyBytes_GET_SIZE(body);
    piece_bytes(&e, body);
    PyObject *seq = emit(s, &e);
    Py_DECREF(body);
    return seq;
}

static PyObject *SessionCore_input(SessionCore *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return plain_event(s, K_INPUT, args, nargsf, kwnames);
}

static PyObject *SessionCore_state(SessionCore *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return plain_event(s, K_STATE, args, nargsf, kwnames);
}

static PyObject *SessionCore_effect(SessionCore *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    static const char *const NAMES[] = {"name", "result", "parent", "step", "status", "actor", "pattern"};
    enum { NPOS = 2 };
    FAST_OR_GENERAL(K_EFFECT)
    if (!argv[0] || !argv[1] || !is_ok(argv[4])) return GENERAL(K_EFFECT);
    Event e = {.kind = K_EFFECT, .name = argv[0], .parent = argv[2], .step = argv[3], .actor = argv[5],
               .pattern = argv[6], .status = s_ok};
    if (!common_ok(&e)) return GENERAL(K_EFFECT);
    PyObject *body = canonical(argv[1]);
    if (!body) { PyErr_Clear(); return GENERAL(K_EFFECT); }
    e.digest_body = PyBytes_AS_STRING(body); e.digest_len = PyBytes_GET_SIZE(body);
    piece(&e, "{\"result\":", 10);
    piece_bytes(&e, body);
    piece(&e, "}", 1);
    PyObject *seq = emit(s, &e);
    Py_DECREF(body);
    return seq;
}

static const char *const ALLOW[] = {"allow", "allowed", "approve", "approved", "pass", "passed", "ok", "accept"};

static PyObject *SessionCore_gate(SessionCore *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    static const char *const NAMES[] = {"name", "decision", "reason", "parent", "step", "status", "actor", "pattern"};
    enum { NPOS = 3 };
    FAST_OR_GENERAL(K_GATE)
    PyObject *decision = argv[1];
    if (!argv[0] || !decision || (argv[5] && argv[5] != Py_None)) return GENERAL(K_GATE);
    /* recording._gate_status, for the decisions that need no stripping or lowering */
    PyObject *status = s_gated;
    if (decision == Py_True) status = s_ok;
    else if (PyUnicode_Check(decision)) {
        if (!PyUnicode_CheckExact(decision)) return GENERAL(K_GATE);
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(decision, &size);
        if (!text) { PyErr_Clear(); return GENERAL(K_GATE); }
        if ((size_t)size != strlen(text)) return GENERAL(K_GATE); /* a NUL inside: Python decides */
        int known = 0;
        for (size_t i = 0; i < sizeof(ALLOW) / sizeof(*ALLOW); i++) known |= strcmp(text, ALLOW[i]) == 0;
        if (known) status = s_ok;
        else {
            for (const char *c = text; *c; c++)
                if (*c == ' ' || (*c >= 'A' && *c <= 'Z') || (unsigned char)*c < 32 || (unsigned char)*c >= 128)
                    return GENERAL(K_GATE); /* strip().lower() might change it: Python decides */
        }
    }
    Event e = {.kind = K_GATE, .name = argv[0], .parent = argv[3], .step = argv[4], .actor = argv[6],
               .pattern = argv[7], .status = status};
    if (!common_ok(&e)) return GENERAL(K_GATE);
    PyObject *body = canonical(decision);
    if (!body) { PyErr_Clear(); return GENERAL(K_GATE); }
    PyObject *reason = canonical(OR_NONE(argv[2]));
    if (!reason) { Py_DECREF(body); PyErr_Clear(); return GENERAL(K_GATE); }
    e.digest_body = PyBytes_AS_STRING(body); e.digest_len = PyBytes_GET_SIZE(body);
    piece(&e, "{\"decision\":", 12);
    piece_bytes(&e, body);
    piece(&e, ",\"reason\":", 10);
    piece_bytes(&e, reason);
    piece(&e, "}", 1);
    PyObject *seq = emit(s, &e);
    Py_DECREF(body);
    Py_DECREF(reason);
    return seq;
}

static PyObject *SessionCore_action(SessionCore *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    static const char *const NAMES[] = {"name", "args", "step", "status", "parent", "call_id", "error",
                                        "actor", "pattern", "replay"};
    enum { NPOS = 2 };
    FAST_OR_GENERAL(K_ACTION)
    if (!argv[0] || !argv[1] || !is_ok(argv[3]) || (argv[5] && argv[5] != Py_None) ||
        (argv[6] && argv[6] != Py_None) || (argv[9] && argv[9] != Py_None))
        return GENERAL(K_ACTION); /* call_id, error or replay: the Python method writes them */
    Event e = {.kind = K_ACTION, .name = argv[0], .step = argv[2], .parent = argv[4], .actor = argv[7],
               .pattern = argv[8], .status = s_ok};
    if (!common_ok(&e)) return GENERAL(K_ACTION);
    PyObject *body = canonical(argv[1]);
    if (!body) { PyErr_Clear(); return GENERAL(K_ACTION); }
    e.digest_body = PyBytes_AS_STRING(body); e.digest_len = PyBytes_GET_SIZE(body);
    piece(&e, "{\"args\":", 8);
    piece_bytes(&e, body);
    piece(&e, "}", 1);
    PyObject *seq = emit(s, &e);
    Py_DECREF(body);
    return seq;
}

/* recording._usage: a token count from a usage dict, as isinstance(value, int) accepts it */
static int fits_int64(PyObject *v) {
    int overflow;
    PyLong_AsLongLongAndOverflow(v, &overflow);
    return !overflow;
}

static PyObject *usage_count(PyObject *usage, const char *first, const char *second) {
    PyObject *v = PyDict_GetItemString(usage, first);
    if (!v) v = PyDict_GetItemString(usage, second);
    return v && PyLong_Check(v) && fits_int64(v) ? v : Py_None; /* recording._usage: an int64, else None */
}

static PyObject *SessionCore_llm(SessionCore *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    static const char *const NAMES[] = {"request", "response", "model", "prompt", "step", "variables", "name",
                                        "latency_ms", "tokens_in", "tokens_out", "parent", "actor", "pattern",
                                        "replay", "content_missing"};
    enum { NPOS = 2 };
    FAST_OR_GENERAL(K_LLM)
    PyObject *request = argv[0], *response = argv[1], *model = argv[2], *prompt = argv[3], *variables = argv[5],
             *label = argv[6], *latency = argv[7], *tin = argv[8], *tout = argv[9];
    if (!request || !response || !model || !PyUnicode_CheckExact(model) || (argv[13] && argv[13] != Py_None) ||
        (argv[14] && argv[14] != Py_False) || !IS_STR_OR_NONE(label))
        return GENERAL(K_LLM); /* replay, content_missing, a missing or odd argument: Python decides */
    if (latency && latency != Py_None && !PyFloat_CheckExact(latency))
        return GENERAL(K_LLM); /* an int (or anything else): Python converts or refuses it */
    if ((tin && tin != Py_None && !(PyLong_CheckExact(tin) && fits_int64(tin))) ||
        (tout && tout != Py_None && !(PyLong_CheckExact(tout) && fits_int64(tout))))
        return GENERAL(K_LLM);
    Py_ssize_t at = -1;
    if (prompt && prompt != Py_None) {
        if (!PyUnicode_CheckExact(prompt)) return GENERAL(K_LLM);
        at = PyUnicode_FindChar(prompt, '@', 0, PyUnicode_GET_LENGTH(prompt), 1);
        if (at < 0) return GENERAL(K_LLM); /* not NAME@VERSION: the Python method says so */
    }
    int need_usage = !tin || tin == Py_None || !tout || tout == Py_None;
    if (need_usage && !PyDict_CheckExact(response)) return GENERAL(K_LLM);
    Event e = {.kind = K_LLM, .step = argv[4], .parent = argv[10], .actor = argv[11], .pattern = argv[12],
               .status = s_ok, .model = model, .prompt = prompt, .latency = latency};
    PyObject *name_obj;
    if (label && label != Py_None && PyUnicode_GET_LENGTH(label) > 0) name_obj = Py_NewRef(label);
    else if (at >= 0) name_obj = PyUnicode_Substring(prompt, 0, at);
    else name_obj = Py_NewRef(s_chat);
    if (!name_obj) return NULL;
    e.name = name_obj;
    if (!common_ok(&e)) { Py_DECREF(name_obj); return GENERAL(K_LLM); }
    PyObject *req = canonical(request), *resp = req ? canonical(response) : NULL, *vars = NULL;
    if (resp && variables && variables != Py_None) {
        vars = canonical(variables);
        if (!vars) Py_CLEAR(resp);
    }
    /* token counts default to the response's usage block, read after the payloads are written (as
     * Session._llm_py does: writing them may run Python code) and held while the event is queued */
    PyObject *usage = need_usage && resp ? PyDict_GetItemString(response, "usage") : NULL;
    if (!resp || (usage && !PyDict_CheckExact(usage)) || (need_usage && !PyDict_CheckExact(response))) {
        Py_XDECREF(req); Py_XDECREF(resp); Py_XDECREF(vars); Py_DECREF(name_obj);
        PyErr_Clear();
        return GENERAL(K_LLM);
    }
    if (!tin || tin == Py_None) tin = usage ? usage_count(usage, "prompt_tokens", "input_tokens") : Py_None;
    if (!tout || tout == Py_None) tout = usage ? usage_count(usage, "completion_tokens", "output_tokens") : Py_None;
    e.tin = Py_NewRef(tin);
    e.tout = Py_NewRef(tout);
    e.digest_body = PyBytes_AS_STRING(req); e.digest_len = PyBytes_GET_SIZE(req);
    piece(&e, "{\"request\":", 11);
    piece_bytes(&e, req);
    piece(&e, ",\"response\":", 12);
    piece_bytes(&e, resp);
    if (vars) {
        piece(&e, ",\"variables\":", 13);
        piece_bytes(&e, vars);
    }
    piece(&e, "}", 1);
    PyObject *seq = emit(s, &e);
    Py_DECREF(req); Py_DECREF(resp); Py_XDECREF(vars); Py_DECREF(name_obj); Py_DECREF(e.tin); Py_DECREF(e.tout);
    return seq;
}

static PyMethodDef SessionCore_methods[] = {
#define FAST(name, doc) {#name, (PyCFunction)(void (*)(void))SessionCore_##name, METH_FASTCALL | METH_KEYWORDS, doc}
    FAST(input, "See Session.input."), FAST(llm, "See Session.llm."), FAST(action, "See Session.action."),
    FAST(gate, "See Session.gate."), FAST(effect, "See Session.effect."), FAST(state, "See Session.state."),
#undef FAST
    {NULL}};

static PyMemberDef SessionCore_members[] = {
    {"recorder", T_OBJECT, offsetof(SessionCore, recorder), READONLY, NULL},
    {"_queue", T_OBJECT, offsetof(SessionCore, buffer), READONLY, NULL},
    {"_next_seq", T_OBJECT, offsetof(SessionCore, next_seq), READONLY, NULL},
    {"_clock", T_OBJECT, offsetof(SessionCore, clock), READONLY, NULL},
    {"session_id", T_OBJECT, offsetof(SessionCore, session_id), READONLY, NULL},
    {"actor", T_OBJECT, offsetof(SessionCore, actor), READONLY, NULL},
    {"pattern", T_OBJECT, offsetof(SessionCore, pattern), READONLY, NULL},
    {NULL}};

static PyTypeObject SessionCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sdbctl.sdb._native.SessionCore",
    .tp_basicsize = sizeof(SessionCore),
    /* with the collector: its Python subclass Session is tracked anyway (every heap type's instances
     * are), and a clock or recorder that refers back to a session must not make a cycle it cannot see */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)SessionCore_traverse,
    .tp_clear = (inquiry)SessionCore_clear,
    .tp_doc = "A session's recording methods in C, over an EventBuffer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SessionCore_init,
    .tp_dealloc = (destructor)SessionCore_dealloc,
    .tp_methods = SessionCore_methods,
    .tp_members = SessionCore_members,
};

static PyObject *configure(PyObject *mod, PyObject *args) {
    PyObject *dumps, *dflt, *options, *canon;
    if (!PyArg_ParseTuple(args, "OOOO", &dumps, &dflt, &options, &canon)) return NULL;
    Py_INCREF(dumps); Py_XSETREF(g_dumps, dumps);
    Py_INCREF(dflt); Py_XSETREF(g_default, dflt);
    Py_INCREF(options); Py_XSETREF(g_options, options);
    Py_INCREF(canon); Py_XSETREF(g_canonical, canon);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS, "configure(dumps, default, options, canonical_bytes)"},
    {"digest", (PyCFunction)(void (*)(void))digest_fn, METH_FASTCALL, "canonical.digest in C: xxh3-64 of name, NUL, body."},
    {"canonical_bytes", canonical_bytes, METH_O, "Canonical JSON of a value as UTF-8 bytes (sdb.events.canonical)."},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_native", "The recorder's hot path in C.", -1, module_methods};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&EventBufferType) < 0 || PyType_Ready(&SessionCoreType) < 0 || PyType_Ready(&CounterType) < 0)
        return NULL;
    PyObject *time_mod = PyImport_ImportModule("time");
    if (!time_mod) return NULL;
    g_time_ns = PyObject_GetAttrString(time_mod, "time_ns");
    Py_DECREF(time_mod);
    s_queue = PyUnicode_InternFromString("_queue");
    s_clock = PyUnicode_InternFromString("clock");
    if (!g_time_ns || !s_queue || !s_clock) return NULL;
    s_ok = PyUnicode_InternFromString("ok");
    s_gated = PyUnicode_InternFromString("gated");
    s_chat = PyUnicode_InternFromString("chat");
    if (!s_ok || !s_gated || !s_chat) return NULL;
    for (int k = 0; k < 6; k++) {
        s_kind[k] = PyUnicode_InternFromString(KIND_NAMES[k]);
        s_general[k] = PyUnicode_FromFormat("_%s_py", KIND_NAMES[k]);
        if (!s_kind[k] || !s_general[k]) return NULL;
    }
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&EventBufferType);
    Py_INCREF(&SessionCoreType);
    Py_INCREF(&CounterType);
    if (PyModule_AddObject(m, "Counter", (PyObject *)&CounterType) < 0 ||
        PyModule_AddObject(m, "EventBuffer", (PyObject *)&EventBufferType) < 0 ||
        PyModule_AddObject(m, "SessionCore", (PyObject *)&SessionCoreType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* muxstream._speedups.FrameDecoder: the compiled twin of
 * muxstream/protocol/_frames.py's PyFrameDecoder (SPDY/3 frames, 2.2-2.6).
 *
 * Same contract, same frames (built from the same Python classes), same
 * errors with the same messages: the Python class is the reference, and
 * tests/protocol/test_protocol_accel_differential.py feeds both arbitrary
 * bytes in arbitrary chunks and compares everything they return or raise.
 * See the Python class for the theory of operation; in short: a chunk is
 * borrowed (its buffer held) until the next receive()/release(), frame
 * headers and control payloads that straddle chunks are gathered in a small
 * buffer, DATA payloads are copied once out of the chunk (or handed out as the
 * chunk itself when the chunk is a ``bytes`` object and entirely payload). */
#include "speedups.h"

#include <stdint.h>
#include <string.h>

#include "structmember.h"

#define FRAME_HEADER_SIZE 8
#define CONTROL_BIT 0x80000000u
#define SPDY_VERSION 3
#define MAX_ID 0x7FFFFFFFu
/* Keep in step with LARGE_DATA and DIRECT_READ in _frames.py (setup_frames
 * checks that they are equal). */
#define LARGE_DATA (64 * 1024)
#define DIRECT_READ (32 * 1024)

enum { S_HEADER = 0, S_DATA = 1, S_CONTROL = 2, S_DISCARD = 3 };

enum {
    T_SYN_STREAM = 1,
    T_SYN_REPLY = 2,
    T_RST_STREAM = 3,
    T_SETTINGS = 4,
    T_PING = 6,
    T_GOAWAY = 7,
    T_HEADERS = 8,
    T_WINDOW_UPDATE = 9,
};

/* --- the Python objects setup_frames() hands over ------------------------- */

enum {
    P_DataFrame,
    P_SynStreamFrame,
    P_SynReplyFrame,
    P_RstStreamFrame,
    P_SettingsEntry,
    P_SettingsFrame,
    P_PingFrame,
    P_GoAwayFrame,
    P_HeadersFrame,
    P_WindowUpdateFrame,
    P_UnknownControlFrame,
    P_RemoteProtocolError,
    P_HeaderDecompressor,
    P_flags,           /* tuple: every 8-bit flags value as a Flag */
    P_flag_none,       /* Flag.NONE */
    P_settings_flag,   /* the SettingsFlag class */
    P_frame_too_large, /* RstStatus.FRAME_TOO_LARGE */
    P_default_max_control_frame,
    P_max_frame_length,
    P_large_data,
    P_direct_read,
    P_COUNT,
};

static const char *const py_names[P_COUNT] = {
    "DataFrame",
    "SynStreamFrame",
    "SynReplyFrame",
    "RstStreamFrame",
    "SettingsEntry",
    "SettingsFrame",
    "PingFrame",
    "GoAwayFrame",
    "HeadersFrame",
    "WindowUpdateFrame",
    "UnknownControlFrame",
    "RemoteProtocolError",
    "HeaderDecompressor",
    "flags",
    "flag_none",
    "settings_flag",
    "frame_too_large",
    "default_max_control_frame",
    "max_frame_length",
    "large_data",
    "direct_read",
};

static PyObject *py[P_COUNT];
static Py_ssize_t default_max_control_frame;
static Py_ssize_t max_frame_length;

PyObject *
mux_setup_frames(PyObject *module, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL) {
        PyErr_SetString(PyExc_TypeError, "setup_frames takes keyword arguments only");
        return NULL;
    }
    PyObject *found[P_COUNT];
    for (int i = 0; i < P_COUNT; i++) {
        found[i] = PyDict_GetItemString(kwargs, py_names[i]);
        if (found[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "setup_frames needs %s", py_names[i]);
            return NULL;
        }
    }
    if (PyDict_GET_SIZE(kwargs) != P_COUNT) {
        PyErr_SetString(PyExc_TypeError, "setup_frames got unknown names");
        return NULL;
    }
    if (!PyTuple_Check(found[P_flags]) || PyTuple_GET_SIZE(found[P_flags]) != 256) {
        PyErr_SetString(PyExc_TypeError, "flags must be a tuple of 256 Flag values");
        return NULL;
    }
    Py_ssize_t dmcf = PyLong_AsSsize_t(found[P_default_max_control_frame]);
    Py_ssize_t mfl = PyLong_AsSsize_t(found[P_max_frame_length]);
    Py_ssize_t large = PyLong_AsSsize_t(found[P_large_data]);
    Py_ssize_t direct = PyLong_AsSsize_t(found[P_direct_read]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (large != LARGE_DATA || direct != DIRECT_READ) {
        PyErr_SetString(PyExc_ValueError,
                        "LARGE_DATA/DIRECT_READ differ between _frames.py and decoder.c");
        return NULL;
    }
    for (int i = 0; i < P_COUNT; i++) {
        Py_INCREF(found[i]);
        Py_XSETREF(py[i], found[i]);
    }
    default_max_control_frame = dmcf;
    max_frame_length = mfl;
    Py_RETURN_NONE;
}

/* --- the decoder -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *decompressor;
    Py_ssize_t max_control_frame;
    Py_ssize_t max_data_frame;
    /* a partial frame header or control payload */
    uint8_t *pending;
    Py_ssize_t pending_len;
    Py_ssize_t pending_cap;
    /* the borrowed chunk: its buffer is held while chunk_obj is set */
    PyObject *chunk_obj;
    Py_buffer view;
    const uint8_t *buf;
    Py_ssize_t len;
    int whole; /* chunk_obj is exactly ``bytes``: a piece spanning it is the chunk itself */
    int small_run;
    Py_ssize_t pos;
    int state;
    Py_ssize_t remaining;
    uint32_t stream_id;
    int flags;
    int ctype;
    int broken;
} Decoder;

static void
drop_chunk(Decoder *self)
{
    if (self->chunk_obj != NULL) {
        PyBuffer_Release(&self->view);
        Py_CLEAR(self->chunk_obj);
    }
    self->buf = NULL;
    self->len = 0;
    self->whole = 0;
    self->pos = 0;
}

/* Borrow ``obj``'s buffer as the chunk (nothing if it is empty). */
static int
hold_chunk(Decoder *self, PyObject *obj)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    drop_chunk(self);
    if (view.len == 0) {
        PyBuffer_Release(&view);
        return 0;
    }
    Py_INCREF(obj);
    self->chunk_obj = obj;
    self->view = view;
    self->buf = (const uint8_t *)view.buf;
    self->len = view.len;
    self->whole = PyBytes_CheckExact(obj);
    return 0;
}

/* Replace the chunk with a ``bytes`` copy of its unparsed rest followed by
 * ``extra`` (``extra_len`` bytes); whole stays as ``keep_whole`` says. */
static int
rebase_chunk(Decoder *self, const void *extra, Py_ssize_t extra_len, int keep_whole)
{
    Py_ssize_t rest = self->len - self->pos;
    if (rest + extra_len == 0) {
        drop_chunk(self);
        return 0;
    }
    PyObject *joined = PyBytes_FromStringAndSize(NULL, rest + extra_len);
    if (joined == NULL) {
        return -1;
    }
    char *p = PyBytes_AS_STRING(joined);
    if (rest) {
        memcpy(p, self->buf + self->pos, rest);
    }
    if (extra_len) {
        memcpy(p + rest, extra, extra_len);
    }
    int r = hold_chunk(self, joined);
    Py_DECREF(joined);
    if (r == 0 && !keep_whole) {
        self->whole = 0;
    }
    return r;
}

static int
Decoder_init(Decoder *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"decompressor", "max_control_frame", "max_data_frame", NULL};
    PyObject *decompressor = Py_None;
    if (py[P_DataFrame] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "muxstream._speedups.setup_frames was not called");
        return -1;
    }
    Py_ssize_t max_control = default_max_control_frame;
    Py_ssize_t max_data = max_frame_length;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$nn:FrameDecoder", kwlist, &decompressor,
                                     &max_control, &max_data)) {
        return -1;
    }
    int truthy = PyObject_IsTrue(decompressor);
    if (truthy < 0) {
        return -1;
    }
    if (truthy) {
        Py_INCREF(decompressor);
    }
    else {
        decompressor = PyObject_CallNoArgs(py[P_HeaderDecompressor]);
        if (decompressor == NULL) {
            return -1;
        }
    }
    Py_XSETREF(self->decompressor, decompressor);
    self->max_control_frame = max_control;
    self->max_data_frame = max_data;
    drop_chunk(self);
    self->pending_len = 0;
    self->small_run = 2;
    self->state = S_HEADER;
    self->remaining = 0;
    self->stream_id = 0;
    self->flags = 0;
    self->ctype = 0;
    self->broken = 0;
    return 0;
}

static int
Decoder_traverse(Decoder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->decompressor);
    Py_VISIT(self->chunk_obj);
    return 0;
}

static int
Decoder_clear(Decoder *self)
{
    Py_CLEAR(self->decompressor);
    drop_chunk(self);
    return 0;
}

static void
Decoder_dealloc(Decoder *self)
{
    PyObject_GC_UnTrack(self);
    Decoder_clear(self);
    PyMem_Free(self->pending);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* --- errors --------------------------------------------------------------- */

static PyObject *
raise_error(PyObject *exc)
{
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* raise RemoteProtocolError.session(message) -- steals ``message`` */
static PyObject *
session_error(PyObject *message)
{
    if (message == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallMethod(py[P_RemoteProtocolError], "session", "O", message);
    Py_DECREF(message);
    return raise_error(exc);
}

/* --- receiving -------------------------------------------------------------- */

static PyObject *
Decoder_receive(Decoder *self, PyObject *data)
{
    if (self->len - self->pos > 0) {
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        int r = rebase_chunk(self, view.buf, view.len, 1);
        PyBuffer_Release(&view);
        if (r < 0) {
            return NULL;
        }
    }
    else if (hold_chunk(self, data) < 0) {
        return NULL;
    }
    self->pos = 0;
    Py_RETURN_NONE;
}

static PyObject *
Decoder_release(Decoder *self, PyObject *unused)
{
    if (rebase_chunk(self, NULL, 0, 0) < 0) {
        return NULL;
    }
    self->pos = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t
data_due(Decoder *self)
{
    if (self->state == S_DATA && self->pos == self->len) {
        return self->remaining;
    }
    return 0;
}

static PyObject *
Decoder_get_data_due(Decoder *self, void *closure)
{
    return PyLong_FromSsize_t(data_due(self));
}

static PyObject *
Decoder_get_read_hint(Decoder *self, void *closure)
{
    Py_ssize_t due = data_due(self);
    if (due) {
        return PyLong_FromSsize_t(due >= DIRECT_READ || self->small_run < 2 ? due : 0);
    }
    if (self->state == S_HEADER && self->pos == self->len && self->pending_len == 0
        && self->small_run < 2) {
        return PyLong_FromLong(-FRAME_HEADER_SIZE);
    }
    return PyLong_FromLong(0);
}

static PyObject *
Decoder_get_buffered(Decoder *self, void *closure)
{
    return PyLong_FromSsize_t(self->len - self->pos + self->pending_len);
}

/* Fill ``pending`` up to ``need`` bytes from the chunk: 1 when complete. */
static int
take_pending(Decoder *self, Py_ssize_t need)
{
    Py_ssize_t want = need - self->pending_len;
    Py_ssize_t avail = self->len - self->pos;
    Py_ssize_t n = want < avail ? want : avail;
    if (n > 0) {
        if (self->pending_len + n > self->pending_cap) {
            Py_ssize_t cap = self->pending_cap ? self->pending_cap : 64;
            while (cap < self->pending_len + n) {
                cap *= 2;
            }
            uint8_t *grown = PyMem_Realloc(self->pending, cap);
            if (grown == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            self->pending = grown;
            self->pending_cap = cap;
        }
        memcpy(self->pending + self->pending_len, self->buf + self->pos, n);
        self->pending_len += n;
        self->pos += n;
    }
    return self->pending_len == need;
}

static inline uint32_t
u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static const char *
type_name(int ctype)
{
    switch (ctype) {
    case T_SYN_STREAM: return "SYN_STREAM";
    case T_SYN_REPLY: return "SYN_REPLY";
    case T_RST_STREAM: return "RST_STREAM";
    case T_SETTINGS: return "SETTINGS";
    case T_PING: return "PING";
    case T_GOAWAY: return "GOAWAY";
    case T_HEADERS: return "HEADERS";
    case T_WINDOW_UPDATE: return "WINDOW_UPDATE";
    default: return NULL;
    }
}

static PyObject *
decompress(Decoder *self, const uint8_t *p, Py_ssize_t n)
{
    PyObject *block = PyBytes_FromStringAndSize((const char *)p, n);
    if (block == NULL) {
        return NULL;
    }
    PyObject *headers = PyObject_CallMethod(self->decompressor, "decompress", "O", block);
    Py_DECREF(block);
    return headers;
}

static PyObject *
parse_settings(const uint8_t *p, Py_ssize_t length, PyObject *fl)
{
    uint32_t count = u32(p);
    if ((uint64_t)length != 4 + 8 * (uint64_t)count) {
        return session_error(PyUnicode_FromFormat(
            "SETTINGS frame of %zd bytes for %lu entries", length, (unsigned long)count));
    }
    /* Read every entry before calling into Python: the payload may live in
     * the borrowed chunk. */
    uint32_t *words = PyMem_Malloc(sizeof(uint32_t) * 2 * (count ? count : 1));
    if (words == NULL) {
        return PyErr_NoMemory();
    }
    for (uint32_t i = 0; i < 2 * count; i++) {
        words[i] = u32(p + 4 + 4 * (Py_ssize_t)i);
    }
    PyObject *result = NULL;
    PyObject *entries = PyTuple_New(count);
    if (entries == NULL) {
        goto done;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t fid = words[2 * i], value = words[2 * i + 1];
        PyObject *sflag = PyObject_CallFunction(py[P_settings_flag], "k",
                                                (unsigned long)(fid >> 24));
        if (sflag == NULL) {
            goto done;
        }
        PyObject *entry = PyObject_CallFunction(py[P_SettingsEntry], "kkN",
                                                (unsigned long)(fid & 0xFFFFFF),
                                                (unsigned long)value, sflag);
        if (entry == NULL) {
            goto done;
        }
        PyTuple_SET_ITEM(entries, i, entry);
    }
    result = PyObject_CallFunction(py[P_SettingsFrame], "OO", entries, fl);
done:
    Py_XDECREF(entries);
    PyMem_Free(words);
    return result;
}

static PyObject *
parse_control(Decoder *self, int ctype, int flags, const uint8_t *p, Py_ssize_t length)
{
    const char *name = type_name(ctype);
    if (name == NULL) {
        PyObject *payload = PyBytes_FromStringAndSize((const char *)p, length);
        if (payload == NULL) {
            return NULL;
        }
        return PyObject_CallFunction(py[P_UnknownControlFrame], "iiN", ctype, flags, payload);
    }
    Py_ssize_t fixed = -1, min = 0;
    switch (ctype) {
    case T_RST_STREAM: case T_GOAWAY: case T_WINDOW_UPDATE: fixed = 8; break;
    case T_PING: fixed = 4; break;
    case T_SYN_STREAM: min = 10; break;
    default: min = 4; break; /* SYN_REPLY, HEADERS, SETTINGS */
    }
    if (fixed >= 0 && length != fixed) {
        return session_error(PyUnicode_FromFormat("%s frame of %zd bytes", name, length));
    }
    if (length < min) {
        return session_error(PyUnicode_FromFormat("%s frame too short (%zd bytes)", name, length));
    }
    PyObject *fl = PyTuple_GET_ITEM(py[P_flags], flags);
    switch (ctype) {
    case T_SYN_STREAM: {
        uint32_t sid = u32(p) & MAX_ID, assoc = u32(p + 4) & MAX_ID;
        int pri = p[8] >> 5, slot = p[9];
        PyObject *headers = decompress(self, p + 10, length - 10);
        if (headers == NULL) {
            return NULL;
        }
        return PyObject_CallFunction(py[P_SynStreamFrame], "kNOkii", (unsigned long)sid, headers,
                                     fl, (unsigned long)assoc, pri, slot);
    }
    case T_SYN_REPLY:
    case T_HEADERS: {
        uint32_t sid = u32(p) & MAX_ID;
        PyObject *headers = decompress(self, p + 4, length - 4);
        if (headers == NULL) {
            return NULL;
        }
        PyObject *cls = ctype == T_SYN_REPLY ? py[P_SynReplyFrame] : py[P_HeadersFrame];
        return PyObject_CallFunction(cls, "kNO", (unsigned long)sid, headers, fl);
    }
    case T_RST_STREAM:
        return PyObject_CallFunction(py[P_RstStreamFrame], "kk", (unsigned long)(u32(p) & MAX_ID),
                                     (unsigned long)u32(p + 4));
    case T_SETTINGS:
        return parse_settings(p, length, fl);
    case T_PING:
        return PyObject_CallFunction(py[P_PingFrame], "k", (unsigned long)u32(p));
    case T_GOAWAY:
        return PyObject_CallFunction(py[P_GoAwayFrame], "kk", (unsigned long)(u32(p) & MAX_ID),
                                     (unsigned long)u32(p + 4));
    default: /* WINDOW_UPDATE */
        return PyObject_CallFunction(py[P_WindowUpdateFrame], "kk",
                                     (unsigned long)(u32(p) & MAX_ID),
                                     (unsigned long)(u32(p + 4) & MAX_ID));
    }
}

static PyObject *
data_frame(uint32_t sid, PyObject *piece, PyObject *flags, int partial)
{
    PyObject *args[4];
    args[0] = PyLong_FromUnsignedLong(sid);
    if (args[0] == NULL) {
        Py_DECREF(piece);
        return NULL;
    }
    args[1] = piece;
    args[2] = flags;
    args[3] = Py_True;
    PyObject *frame = PyObject_Vectorcall(py[P_DataFrame], args, partial ? 4 : 3, NULL);
    Py_DECREF(args[0]);
    Py_DECREF(piece);
    return frame;
}

static PyObject *
decode_next(Decoder *self)
{
    for (;;) {
        switch (self->state) {
        case S_HEADER: {
            uint32_t first, second;
            if (self->pending_len == 0 && self->len - self->pos >= FRAME_HEADER_SIZE) {
                first = u32(self->buf + self->pos);
                second = u32(self->buf + self->pos + 4);
                self->pos += FRAME_HEADER_SIZE;
            }
            else {
                int r = take_pending(self, FRAME_HEADER_SIZE);
                if (r < 0) {
                    return NULL;
                }
                if (!r) {
                    Py_RETURN_NONE;
                }
                first = u32(self->pending);
                second = u32(self->pending + 4);
                self->pending_len = 0;
            }
            self->flags = (int)(second >> 24);
            Py_ssize_t length = second & 0xFFFFFF;
            if (first & CONTROL_BIT) {
                int version = (first >> 16) & 0x7FFF;
                if (version != SPDY_VERSION) {
                    return session_error(
                        PyUnicode_FromFormat("unsupported SPDY version %d", version));
                }
                if (length > self->max_control_frame) {
                    return session_error(PyUnicode_FromFormat(
                        "control frame of %zd bytes (limit %zd)", length,
                        self->max_control_frame));
                }
                self->ctype = first & 0xFFFF;
                self->remaining = length;
                self->state = S_CONTROL;
                continue;
            }
            uint32_t sid = first & MAX_ID;
            if (sid == 0) {
                return session_error(PyUnicode_FromString("DATA frame on stream 0"));
            }
            self->stream_id = sid;
            self->remaining = length;
            if (length >= LARGE_DATA) {
                self->small_run = 0;
            }
            else if (self->small_run < 2) {
                self->small_run += 1;
            }
            if (length > self->max_data_frame) {
                self->state = S_DISCARD;
                PyObject *msg = PyUnicode_FromFormat("DATA frame of %zd bytes (limit %zd)",
                                                     length, self->max_data_frame);
                if (msg == NULL) {
                    return NULL;
                }
                PyObject *exc = PyObject_CallMethod(py[P_RemoteProtocolError], "stream", "OkO",
                                                    msg, (unsigned long)sid,
                                                    py[P_frame_too_large]);
                Py_DECREF(msg);
                return raise_error(exc);
            }
            if (length == 0) {
                PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
                if (empty == NULL) {
                    return NULL;
                }
                return data_frame(sid, empty, PyTuple_GET_ITEM(py[P_flags], self->flags), 0);
            }
            self->state = S_DATA;
            continue;
        }
        case S_DATA: {
            Py_ssize_t avail = self->len - self->pos;
            if (!avail) {
                Py_RETURN_NONE;
            }
            Py_ssize_t take = self->remaining < avail ? self->remaining : avail;
            PyObject *piece;
            if (take == avail && self->pos == 0 && self->whole) {
                piece = self->chunk_obj; /* the whole chunk is payload: no copy */
                Py_INCREF(piece);
            }
            else {
                piece = PyBytes_FromStringAndSize((const char *)self->buf + self->pos, take);
                if (piece == NULL) {
                    return NULL;
                }
            }
            self->pos += take;
            self->remaining -= take;
            if (self->remaining) {
                return data_frame(self->stream_id, piece, py[P_flag_none], 1);
            }
            self->state = S_HEADER;
            return data_frame(self->stream_id, piece,
                              PyTuple_GET_ITEM(py[P_flags], self->flags), 0);
        }
        case S_DISCARD: {
            Py_ssize_t avail = self->len - self->pos;
            Py_ssize_t take = self->remaining < avail ? self->remaining : avail;
            self->pos += take;
            self->remaining -= take;
            if (self->remaining) {
                Py_RETURN_NONE;
            }
            self->state = S_HEADER;
            continue;
        }
        default: { /* S_CONTROL */
            /* parse_control reads the payload before it calls any Python code
             * (a decompressor, a frame class), so neither the chunk nor
             * ``pending`` has to outlive that. */
            Py_ssize_t need = self->remaining;
            const uint8_t *p;
            if (self->pending_len == 0 && self->len - self->pos >= need) {
                p = self->buf + self->pos;
                self->pos += need;
            }
            else {
                int r = take_pending(self, need);
                if (r < 0) {
                    return NULL;
                }
                if (!r) {
                    Py_RETURN_NONE;
                }
                p = self->pending;
                self->pending_len = 0;
            }
            self->state = S_HEADER;
            return parse_control(self, self->ctype, self->flags, p, need);
        }
        }
    }
}

static PyObject *
Decoder_next_frame(Decoder *self, PyObject *unused)
{
    if (self->broken) {
        return session_error(PyUnicode_FromString("the frame stream is already broken"));
    }
    PyObject *frame = decode_next(self);
    if (frame == NULL && PyErr_ExceptionMatches(py[P_RemoteProtocolError])) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyObject *fatal = value != NULL ? PyObject_GetAttrString(value, "fatal") : NULL;
        if (fatal == NULL) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return NULL;
        }
        int is_fatal = PyObject_IsTrue(fatal);
        Py_DECREF(fatal);
        if (is_fatal < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return NULL;
        }
        if (is_fatal) {
            self->broken = 1;
        }
        PyErr_Restore(type, value, tb);
    }
    return frame;
}

static PyMethodDef Decoder_methods[] = {
    {"receive", (PyCFunction)Decoder_receive, METH_O,
     "Borrow ``data`` until the next call; read its frames with next_frame()."},
    {"release", (PyCFunction)Decoder_release, METH_NOARGS,
     "Stop borrowing the current chunk (copying out whatever is not parsed yet)."},
    {"next_frame", (PyCFunction)Decoder_next_frame, METH_NOARGS,
     "The next complete frame (or DATA piece), or None when more bytes are needed."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Decoder_getset[] = {
    {"data_due", (getter)Decoder_get_data_due, NULL,
     "Payload bytes of the current DATA frame still to come, once the chunk is used up.", NULL},
    {"read_hint", (getter)Decoder_get_read_hint, NULL,
     "How a reader that wants to save copies should read next.", NULL},
    {"buffered", (getter)Decoder_get_buffered, NULL,
     "Bytes received but not yet returned as frames.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Decoder_members[] = {
    {"decompressor", T_OBJECT_EX, offsetof(Decoder, decompressor), 0,
     "The HeaderDecompressor of this direction."},
    {"max_control_frame", T_PYSSIZET, offsetof(Decoder, max_control_frame), 0,
     "Control payloads bigger than this are refused before they are buffered."},
    {"max_data_frame", T_PYSSIZET, offsetof(Decoder, max_data_frame), 0,
     "DATA frames bigger than this are a stream error (FRAME_TOO_LARGE)."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject Mux_FrameDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "muxstream._speedups.FrameDecoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Incremental SPDY/3 frame parser (compiled twin of PyFrameDecoder).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_traverse = (traverseproc)Decoder_traverse,
    .tp_clear = (inquiry)Decoder_clear,
    .tp_methods = Decoder_methods,
    .tp_getset = Decoder_getset,
    .tp_members = Decoder_members,
};

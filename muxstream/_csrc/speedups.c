/* muxstream._speedups: the compiled accelerator (module, WebSocket masking).
 *
 * Optional: setup.py builds it when a C compiler is present, and muxstream
 * runs the same pure-Python code without it (or with MUXSTREAM_NO_ACCEL=1).
 * Plain CPython C API, no other dependency.
 *
 * WebSocket: RFC 6455 section 5.3 masks every client frame's payload with a
 * 4-byte key (byte i XOR key[i % 4]). Done in Python (wsproto) it costs about
 * 2 CPU seconds per GiB on each side; here it is one pass of 8-byte XORs. */
#include "speedups.h"

#include <stdint.h>
#include <string.h>

/* dst[i] = src[i] ^ key[(phase + i) % 4] for i in [0, n). src may equal dst. */
static void
xor_mask(const uint8_t *src, uint8_t *dst, Py_ssize_t n, const uint8_t *key, Py_ssize_t phase)
{
    uint8_t k[8];
    for (int i = 0; i < 8; i++) {
        k[i] = key[(phase + i) & 3];
    }
    uint64_t k64;
    memcpy(&k64, k, 8);
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        memcpy(&c, src + i + 16, 8);
        memcpy(&d, src + i + 24, 8);
        a ^= k64;
        b ^= k64;
        c ^= k64;
        d ^= k64;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
        memcpy(dst + i + 16, &c, 8);
        memcpy(dst + i + 24, &d, 8);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t a;
        memcpy(&a, src + i, 8);
        a ^= k64;
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ k[i & 7];
    }
}

static int
get_key(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view->len != 4) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "a masking key is 4 bytes");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(mask_doc,
"mask(data, key, phase=0) -> bytes\n\n"
"``data`` XOR the 4-byte ``key``, starting at key byte ``phase % 4``.");

static PyObject *
mux_mask(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "key", "phase", NULL};
    Py_buffer data, key;
    Py_ssize_t phase = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*|n:mask", kwlist, &data, &key, &phase)) {
        return NULL;
    }
    PyObject *out = NULL;
    if (key.len != 4) {
        PyErr_SetString(PyExc_ValueError, "a masking key is 4 bytes");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, data.len);
    if (out == NULL) {
        goto done;
    }
    phase %= 4;
    if (phase < 0) {
        phase += 4;
    }
    Py_BEGIN_ALLOW_THREADS
    xor_mask((const uint8_t *)data.buf, (uint8_t *)PyBytes_AS_STRING(out), data.len,
             (const uint8_t *)key.buf, phase);
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return out;
}

PyDoc_STRVAR(ws_frame_doc,
"ws_frame(first_byte, payload, key=None) -> bytes\n\n"
"One WebSocket frame: ``first_byte`` (FIN, RSV and opcode), the shortest length\n"
"encoding, then ``payload`` -- masked with the 4-byte ``key`` (and the key sent)\n"
"when one is given, as a client must (RFC 6455 section 5.2).");

static PyObject *
mux_ws_frame(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"first_byte", "payload", "key", NULL};
    int first;
    Py_buffer payload;
    PyObject *key_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iy*|O:ws_frame", kwlist, &first, &payload,
                                     &key_obj)) {
        return NULL;
    }
    PyObject *out = NULL;
    Py_buffer key;
    int masked = key_obj != Py_None;
    if (first < 0 || first > 255) {
        PyErr_SetString(PyExc_ValueError, "first_byte must be 0..255");
        PyBuffer_Release(&payload);
        return NULL;
    }
    if (masked && get_key(key_obj, &key) < 0) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    Py_ssize_t n = payload.len;
    Py_ssize_t header = 2 + (n > 65535 ? 8 : n > 125 ? 2 : 0) + (masked ? 4 : 0);
    out = PyBytes_FromStringAndSize(NULL, header + n);
    if (out == NULL) {
        goto done;
    }
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    p[0] = (uint8_t)first;
    uint8_t mask_bit = masked ? 0x80 : 0;
    Py_ssize_t at;
    if (n > 65535) {
        p[1] = mask_bit | 127;
        uint64_t len = (uint64_t)n;
        for (int i = 0; i < 8; i++) {
            p[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        }
        at = 10;
    }
    else if (n > 125) {
        p[1] = mask_bit | 126;
        p[2] = (uint8_t)(n >> 8);
        p[3] = (uint8_t)n;
        at = 4;
    }
    else {
        p[1] = mask_bit | (uint8_t)n;
        at = 2;
    }
    if (masked) {
        memcpy(p + at, key.buf, 4);
        at += 4;
        Py_BEGIN_ALLOW_THREADS
        xor_mask((const uint8_t *)payload.buf, p + at, n, (const uint8_t *)key.buf, 0);
        Py_END_ALLOW_THREADS
    }
    else {
        memcpy(p + at, payload.buf, n);
    }
done:
    if (masked) {
        PyBuffer_Release(&key);
    }
    PyBuffer_Release(&payload);
    return out;
}

static PyMethodDef module_methods[] = {
    {"mask", (PyCFunction)(void (*)(void))mux_mask, METH_VARARGS | METH_KEYWORDS, mask_doc},
    {"ws_frame", (PyCFunction)(void (*)(void))mux_ws_frame, METH_VARARGS | METH_KEYWORDS,
     ws_frame_doc},
    {"setup_frames", (PyCFunction)(void (*)(void))mux_setup_frames,
     METH_VARARGS | METH_KEYWORDS,
     "setup_frames(**names): wire FrameDecoder to the Python frame classes (once)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "muxstream._speedups",
    "Compiled twins of muxstream's hot paths (see muxstream._accel).",
    -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&Mux_FrameDecoderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&Mux_FrameDecoderType);
    if (PyModule_AddObject(m, "FrameDecoder", (PyObject *)&Mux_FrameDecoderType) < 0) {
        Py_DECREF(&Mux_FrameDecoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

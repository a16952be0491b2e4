/* muxstream._speedups: shared declarations of the compiled accelerator.
 *
 * The pure-Python code is the reference: every function here has a Python
 * twin that behaves the same, byte for byte and error for error
 * (tests/protocol/test_protocol_accel_differential.py checks it). */
#ifndef MUXSTREAM_SPEEDUPS_H
#define MUXSTREAM_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The frame decoder type (decoder.c) and its one-time wiring to the
 * Python frame classes and error constructors (setup_frames). */
extern PyTypeObject Mux_FrameDecoderType;
PyObject *mux_setup_frames(PyObject *module, PyObject *args, PyObject *kwargs);

#endif

"""A host whose clock is off and whose name is another's, for tests/test_liveness.py: on
PYTHONPATH, this shifts ``time.time`` by ``GATEDRNN_TEST_CLOCK_SHIFT`` seconds and names the host
``GATEDRNN_TEST_HOST`` (``socket.gethostname``, ``os.uname``). The monotonic clock is left alone,
as a host's is."""

import os
import socket
import time

_shift = float(os.environ.get("GATEDRNN_TEST_CLOCK_SHIFT", "0") or 0)
_host = os.environ.get("GATEDRNN_TEST_HOST")
if _shift:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _shift
    time.time_ns = lambda: _time_ns() + int(_shift * 1e9)
if _host:
    _uname = os.uname
    socket.gethostname = lambda: _host
    os.uname = lambda: os.uname_result((_uname().sysname, _host, _uname().release, _uname().version,
                                        _uname().machine))

"""A corpus of hostile feature code, as a confused or prompt-injected judge could write it.

Each snippet is a feature module (`def feature(text)`) that tries for real to do one thing
that must not happen: write, rename, delete or change a file (in the agent's cwd, the run
folder, $HOME, /tmp or its own cwd), connect to a socket, start a process, read a secret,
signal another process, or exhaust CPU, memory, output, recursion or wall time.

The code is a template: `render(snippet, ctx)` fills in the targets of one test
(`make_context`): @MARK@ (a path in /tmp), @MARKS@ (one path in each place), @VICTIM@ (a
file that must stay as it is), @SECRET@ (a file whose content must not come back),
@PORT@ (a listener on 127.0.0.1 the test opened), @SH@ (a shell command that would touch
every marker and leave a process carrying the context's token) and @TOKEN@.

`violations(ctx)` lists what did happen (empty when everything was contained). Used by
tests/test_sandbox_hostile.py, both through `run_feature` (static check + curated
namespaces + OS isolation) and raw (no static check, real builtins and modules: only the
operating-system layers stand in the way), and by the agent-loop test.

`expect` is the outcome through `run_feature`: "rejected" (static check), "error" (it ran
and failed with a message for the judge) or "ok" (it ran harmlessly); `hint` is a
fragment of that message.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Hostile:
    code: str
    description: str
    attempts: tuple[str, ...]
    expect: str  # "rejected" | "error" | "ok"
    hint: str = ""


_ATTR_CHAINS = {
    "statistics_sys_os_system": Hostile('''
import statistics
def feature(text):
    statistics.sys.modules['os'].system(@SH@)
    return 'x'
''', "the issue's example: statistics.sys -> os.system", ("process", "file"), "error", "statistics.sys is not available"),
    "re_enum_sys_os_system": Hostile('''
import re
def feature(text):
    return str(re.enum.sys.modules['os'].system(@SH@))
''', "re.enum.sys -> os.system", ("process", "file"), "error", "re.enum is not available"),
    "collections_abc_sys_subprocess": Hostile('''
import collections
def feature(text):
    return str(collections.abc.sys.modules['subprocess'].run(['sh', '-c', @SH@]))
''', "collections.abc.sys -> subprocess.run", ("process", "file"), "error", "collections.abc is not available"),
    "json_codecs_open": Hostile('''
import json
def feature(text):
    for p in @MARKS@:
        json.codecs.open(p, 'w').write('pwned')
    return 'x'
''', "json.codecs.open writes files", ("file",), "error", "json.codecs is not available"),
    "json_decoder_re_os_remove": Hostile('''
import json
def feature(text):
    json.decoder.re.enum.sys.modules['os'].remove(@VICTIM@)
    return 'x'
''', "json.decoder.re.enum.sys -> os.remove deletes a file", ("delete",), "error", "json.decoder is not available"),
    "string_formatter_get_field": Hostile('''
import string, statistics
def feature(text):
    sys = string.Formatter().get_field('0.sys', (statistics,), {})[0]
    sys.modules['os'].system(@SH@)
    return 'x'
''', "string.Formatter().get_field does getattr by string", ("process", "file"), "error", "string.Formatter is not available"),
    "functools_update_wrapper_dict": Hostile('''
import functools, statistics
def feature(text):
    def g():
        return 1
    functools.update_wrapper(g, statistics)
    g.sys.modules['os'].rename(@VICTIM@, @MARK@)
    return 'x'
''', "functools.update_wrapper copies a module's dict onto a function", ("rename",), "error", "functools.update_wrapper is not available"),
    "math_sys": Hostile('''
import math
def feature(text):
    return str(math.sys.modules['os'].system(@SH@))
''', "math has no module attributes; try one anyway", ("process",), "error", "math.sys is not available"),
    "itertools_from_import": Hostile('''
from itertools import sys
def feature(text):
    return str(sys.modules['os'].system(@SH@))
''', "from itertools import a name it does not offer", ("process",), "rejected", "itertools.sys is not available"),
    "itertools_chain_attribute": Hostile('''
import itertools
def feature(text):
    return str(itertools.chain.from_iterable.__self__)
''', "a listed builtin's __self__", ("escape",), "rejected", "no underscore attributes"),
    "itertools_os": Hostile('''
import itertools
def feature(text):
    return str(itertools.os.system(@SH@))
''', "itertools has no module attributes; try one anyway", ("process",), "error", "itertools.os is not available"),
    "unicodedata_ucd_object": Hostile('''
import unicodedata
def feature(text):
    return unicodedata.ucd_3_2_0.category(text[0])
''', "unicodedata's UCD object is not on the list", ("escape",), "error", "unicodedata.ucd_3_2_0 is not available"),
    "difflib_function_globals": Hostile('''
import difflib
def feature(text):
    g = difflib.IS_LINE_JUNK.__globals__
    return str(g['_namedtuple'])
''', "a listed function's globals", ("escape",), "rejected", "no underscore attributes"),
    "functools_partial_self": Hostile('''
import functools
def feature(text):
    b = functools.partial(len).func.__self__
    b.open(@MARK@, 'w').write('x')
    return 'x'
''', "partial(len).func.__self__ is the builtins module", ("file",), "rejected", "no underscore attributes"),
    "statistics_random_os": Hostile('''
import statistics
def feature(text):
    return str(statistics.random._os.system(@SH@))
''', "statistics.random._os", ("process",), "rejected", "no underscore attributes"),
    "fullwidth_module_attribute": Hostile('''
import statistics
def feature(text):
    return str(statistics.ｓｙｓ.modules['os'].system(@SH@))
''', "fullwidth letters normalise to `sys`", ("process",), "error", "statistics.sys is not available"),
}

_FORMAT = {
    "format_literal_attribute": Hostile('''
import statistics
def feature(text):
    return '{0.sys.modules}'.format(statistics)
''', "attribute access inside a literal format string", ("escape",), "rejected", "format fields may not use attributes"),
    "format_built_string": Hostile('''
import statistics
def feature(text):
    return ('{0.' + 'sys}').format(statistics)
''', "a format string built at run time", ("escape",), "rejected", "'.format' is only allowed on a string literal"),
    "format_map": Hostile('''
def feature(text):
    return '{x}'.format_map({'x': text})
''', "format_map", ("escape",), "rejected", "format_map"),
    "str_format_unbound": Hostile('''
import statistics
def feature(text):
    return str.format('{0.sys}', statistics)
''', "str.format called on the class", ("escape",), "rejected", "'.format' is only allowed on a string literal"),
    "format_nested_spec": Hostile('''
import statistics
def feature(text):
    return '{0:{1.sys}}'.format(1, statistics)
''', "attribute access inside a nested format spec", ("escape",), "rejected", "format fields may not use attributes"),
    "fstring_attribute_chain": Hostile('''
import statistics
def feature(text):
    return f"""{statistics.sys.modules['os'].system(@SH@)}"""
''', "an f-string evaluating an attribute chain", ("process", "file"), "error", "statistics.sys is not available"),
    "fstring_generator_frame": Hostile('''
def feature(text):
    g = (c for c in text)
    return f"{g.gi_frame.f_globals}"
''', "an f-string reading a generator's frame globals", ("escape",), "rejected", "f_globals"),
    "format_unicode_escaped_dunder": Hostile(r'''
import json
def feature(text):
    n = json.loads('"\\u005f\\u005fclass\\u005f\\u005f"')
    return ('{0.' + n + '}').format(text)
''', "a dunder name decoded at run time, used by str.format", ("escape",), "rejected", "'.format' is only allowed"),
}

_FRAMES = {
    "generator_frame_walk": Hostile('''
def feature(text):
    def gen():
        frame = g.gi_frame.f_back
        while frame is not None:
            mod = frame.f_globals.get('os')
            if mod is not None:
                mod.system(@SH@)
                mod.remove(@VICTIM@)
            frame = frame.f_back
        yield 'walked'
    g = gen()
    return next(g)
''', "a running generator's frame -> callers' globals -> os", ("process", "delete", "file"), "rejected", "f_back"),
    "generator_frame_builtins_open": Hostile('''
def feature(text):
    def gen():
        yield 1
    g = gen()
    o = g.gi_frame.f_builtins['open']
    for p in @MARKS@:
        o(p, 'w').write('x')
    return 'x'
''', "a generator frame's builtins -> open", ("file",), "rejected", "f_builtins"),
    "genexpr_frame_globals": Hostile('''
def feature(text):
    ge = (x for x in [1])
    b = ge.gi_frame.f_globals
    return str(b.keys())
''', "a generator expression's frame", ("escape",), "rejected", "f_globals"),
    "coroutine_frame": Hostile('''
async def c():
    return 1
def feature(text):
    co = c()
    b = co.cr_frame.f_globals['__builtins__']
    co.close()
    b['open'](@MARK@, 'w').write('x')
    return 'x'
''', "a coroutine's frame -> builtins -> open", ("file",), "rejected", "async code is not allowed"),
    "generator_code_consts": Hostile('''
def feature(text):
    def gen():
        yield 'secret'
    return str(gen().gi_code.co_consts)
''', "a generator's code object", ("escape",), "rejected", "co_consts"),
    "generator_yieldfrom": Hostile('''
def feature(text):
    def inner():
        yield 1
    def outer():
        yield from inner()
    g = outer()
    next(g)
    return str(g.gi_yieldfrom.gi_frame.f_back.f_globals)
''', "gi_yieldfrom -> inner frame -> caller", ("escape",), "rejected", "f_globals"),
    "match_class_keyword_attribute": Hostile('''
def feature(text):
    def gen():
        yield 1
    g = gen()
    match g:
        case object(gi_frame=f):
            f.f_back.f_globals['os'].system(@SH@)
    return 'x'
''', "a class pattern reads gi_frame without an attribute node", ("process",), "rejected", "gi_frame"),
}

_TRACEBACKS = {
    "traceback_dunder_walk": Hostile('''
def feature(text):
    try:
        1 / 0
    except ZeroDivisionError as e:
        tb = e.__traceback__
        f = tb.tb_frame
        while f is not None:
            mod = f.f_globals.get('os')
            if mod is not None:
                mod.remove(@VICTIM@)
            f = f.f_back
    return 'x'
''', "an exception's traceback -> frames -> os.remove", ("delete",), "rejected", "no underscore attributes"),
    "traceback_exc_info": Hostile('''
import statistics
def feature(text):
    try:
        1 / 0
    except ZeroDivisionError:
        f = statistics.sys.exc_info()[2].tb_frame.f_back
        f.f_globals['os'].rename(@VICTIM@, @MARK@)
    return 'x'
''', "sys.exc_info() -> tb_frame -> os.rename", ("rename",), "rejected", "f_back"),
    "exception_with_traceback": Hostile('''
def feature(text):
    e = ValueError('x')
    return str(e.with_traceback(None))
''', "with_traceback", ("escape",), "rejected", "with_traceback"),
    "exception_message_leak": Hostile('''
import json
def feature(text):
    try:
        json.loads('{')
    except json.JSONDecodeError as e:
        return e.msg
''', "an exception's public attributes (harmless)", ("escape",), "ok"),
}

_CLOSURES = {
    "closure_cell_contents": Hostile('''
import statistics
def feature(text):
    def outer():
        m = statistics
        def inner():
            return m
        return inner
    m = outer().__closure__[0].cell_contents
    m.sys.modules['os'].system(@SH@)
    return 'x'
''', "a closure cell holding a module", ("process",), "rejected", "cell_contents"),
    "function_globals_builtins": Hostile('''
def feature(text):
    b = feature.__globals__['__builtins__']
    b['open'](@MARK@, 'w').write('x')
    return 'x'
''', "the feature's own globals -> builtins -> open", ("file",), "rejected", "no underscore attributes"),
    "lambda_defaults": Hostile('''
import statistics
def feature(text):
    f = lambda m=statistics: m
    return str(f.__defaults__[0].sys.modules['os'].system(@SH@))
''', "a lambda's default values", ("process",), "rejected", "no underscore attributes"),
}

_SUBCLASS_WALKS = {
    "mro_subclasses_wrap_close": Hostile('''
def feature(text):
    base = str.mro()[-1]
    for c in base.__subclasses__():
        if c.__name__ == '_wrap_close':
            c.__init__.__globals__['system'](@SH@)
    return 'x'
''', "object.__subclasses__() -> os._wrap_close -> system", ("process",), "rejected", "no underscore attributes"),
    "getattr_built_dunders": Hostile('''
def feature(text):
    u = chr(95) * 2
    base = getattr(getattr(text, u + 'class' + u), u + 'base' + u)
    for c in getattr(base, u + 'subclasses' + u)():
        if getattr(c, u + 'name' + u) == '_wrap_close':
            getattr(getattr(c, u + 'init' + u), u + 'globals' + u)['system'](@SH@)
    return 'x'
''', "dunder names built from chr(95), used with getattr", ("process",), "rejected", "'getattr'"),
    "format_built_dunders": Hostile('''
def feature(text):
    u = chr(95) * 2
    return ('{0.' + u + 'class' + u + '.' + u + 'mro' + u + '}').format(text)
''', "dunder names built from chr(95), used in a format string", ("escape",), "rejected", "'.format' is only allowed"),
    "vars_of_module": Hostile('''
import statistics
def feature(text):
    return str(vars(statistics)['sys'].modules['os'].system(@SH@))
''', "vars() of a module", ("process",), "rejected", "'vars'"),
    "type_mro": Hostile('''
def feature(text):
    return str(type(text).mro())
''', "type() of a value", ("escape",), "rejected", "mro"),
    "dir_of_module": Hostile('''
import statistics
def feature(text):
    return ','.join(dir(statistics))
''', "dir() of a module", ("escape",), "rejected", "'dir'"),
    "isinstance_subclass_probe": Hostile('''
import re
def feature(text):
    return str(re.Pattern.mro())
''', "mro() of a listed class", ("escape",), "rejected", "mro"),
}

_ENCODING = {
    "hex_escaped_dunder": Hostile(r'''
def feature(text):
    b = globals()["\x5f\x5fbuiltins\x5f\x5f"]
    b["\x5f\x5fimport\x5f\x5f"]("os").system(@SH@)
    return 'x'
''', "a dunder name written with \\x escapes", ("process",), "rejected", ""),
    "fullwidth_eval": Hostile('''
def feature(text):
    ｅｖａｌ("open(" + repr(@MARK@) + ", 'w').write('x')")
    return 'x'
''', "fullwidth letters normalise to `eval`", ("file",), "rejected", "'eval'"),
    "fullwidth_import_os": Hostile('''
import ｏｓ
def feature(text):
    return str(ｏｓ.system(@SH@))
''', "fullwidth letters normalise to `os`", ("process",), "rejected", "import of 'os'"),
    "utf7_coding_cookie": Hostile('''# -*- coding: utf-7 -*-
def feature(text):
    return "+AF8AXw-import+AF8AXw-"
''', "a UTF-7 coding cookie: ignored, the text stays what it is", ("escape",), "ok"),
    "bytes_decoded_exec": Hostile('''
def feature(text):
    src = bytes([111, 112, 101, 110]).decode() + "(" + repr(@MARK@) + ", 'w').write('x')"
    exec(src)
    return 'x'
''', "code decoded from bytes and exec'd", ("file",), "rejected", "'exec'"),
    "null_byte_in_source": Hostile('def feature(text):\n    return 1\0\n', "a NUL byte in the source", ("escape",), "rejected", "null bytes"),
    "huge_source": Hostile("x = 1\n" * 5000 + "def feature(text):\n    return 'x'\n", "a 30 kB module", ("cpu",), "rejected", "too long"),
    "deep_parentheses": Hostile("def feature(text):\n    return " + "(" * 300 + "1" + ")" * 300 + "\n",
                                "300 nested parentheses", ("recursion",), "rejected", "syntax error"),
    "unicode_text_encodings": Hostile('''
def feature(text):
    out = []
    for enc in ('utf-16', 'utf-7', 'idna', 'punycode', 'cp1252', 'rot13', 'unicode-escape'):
        try:
            out.append(len(text.encode(enc)))
        except (LookupError, UnicodeError):
            out.append(-1)
    return str(out)
''', "text codecs inside the sandbox (lazy imports must not reach files)", ("file",), "ok"),
}

_BOMBS = {
    "memory_bomb": Hostile('''
def feature(text):
    return 'a' * (10 * 1024 ** 3)
''', "allocates 10 GiB", ("memory",), "error", "MemoryError"),
    "memory_growth": Hostile('''
def feature(text):
    x = []
    while True:
        x.append(' ' * 10 ** 6)
''', "grows a list until memory runs out", ("memory",), "error", "MemoryError"),
    "cpu_loop": Hostile('''
def feature(text):
    while True:
        pass
''', "an endless loop", ("cpu",), "error", "CPU time limit"),
    "bigint_power": Hostile('''
def feature(text):
    n = 10 ** 8
    return str(len(str(10 ** n)))
''', "a huge integer power in C", ("cpu", "memory"), "error", ""),
    "regex_catastrophic_backtracking": Hostile('''
import re
def feature(text):
    return str(re.match(r'(a+)+$', 'a' * 64 + 'b'))
''', "exponential regex backtracking", ("cpu",), "error", "CPU time limit"),
    "output_bomb": Hostile('''
def feature(text):
    return 'x' * 30_000_000
''', "a 30 MB label", ("output",), "error", "output too large"),
    "print_bomb": Hostile('''
def feature(text):
    for i in range(200000):
        print('x' * 1000)
    return 'printed'
''', "prints 200 MB (goes nowhere)", ("output",), "ok"),
    "recursion_bomb": Hostile('''
def feature(text):
    def f(n):
        return f(n + 1)
    return f(0)
''', "unbounded recursion", ("recursion",), "error", "RecursionError"),
    "json_nesting_bomb": Hostile('''
import json
def feature(text):
    return str(json.loads('[' * 100000 + ']' * 100000))
''', "deeply nested JSON", ("recursion",), "error", "RecursionError"),
    "nested_list_repr": Hostile('''
def feature(text):
    x = []
    for i in range(1_000_000):
        x = [x]
    return str(len(repr(x)))
''', "repr of a list nested a million deep (C recursion)", ("recursion",), "error", "RecursionError"),
    "sleep_forever": Hostile('''
import time
def feature(text):
    time.sleep(10 ** 6)
    return 'x'
''', "sleeps forever", ("hang",), "rejected", "import of 'time'"),
    "block_on_stdin": Hostile('''
import statistics
def feature(text):
    return statistics.sys.stdin.read()
''', "waits for input", ("hang",), "error", "statistics.sys is not available"),
    "thread_spawn": Hostile('''
import _thread
def feature(text):
    for i in range(100):
        _thread.start_new_thread(lambda: None, ())
    return 'x'
''', "starts threads", ("process",), "rejected", "import of '_thread'"),
    "fork_bomb": Hostile('''
import os
def feature(text):
    while True:
        if os.fork() == 0:
            open(@MARK@, 'w').write('child')
''', "forks until it can't", ("process", "file"), "rejected", "import of 'os'"),
}

_OS = {
    "open_write_markers": Hostile('''
def feature(text):
    for p in @MARKS@:
        open(p, 'w').write('pwned')
    return 'x'
''', "writes a file in cwd, the run folder, $HOME and /tmp", ("file",), "rejected", "'open'"),
    "os_rename_victim": Hostile('''
import os
def feature(text):
    os.rename(@VICTIM@, @MARK@)
    return 'x'
''', "renames a file", ("rename",), "rejected", "import of 'os'"),
    "os_unlink_victim": Hostile('''
import os
def feature(text):
    os.unlink(@VICTIM@)
    return 'x'
''', "deletes a file", ("delete",), "rejected", "import of 'os'"),
    "os_mkdir_symlink_link": Hostile('''
import os
def feature(text):
    out = []
    for f, args in ((os.mkdir, (@MARK@,)), (os.symlink, (@VICTIM@, @MARK@)), (os.link, (@VICTIM@, @MARK@)),
                    (os.mkfifo, (@MARK@,))):
        try:
            f(*args)
            out.append('done')
        except OSError as e:
            out.append(e.strerror)
    return ';'.join(out)
''', "creates a directory, symlink, hard link, fifo", ("file",), "rejected", "import of 'os'"),
    "os_chmod_truncate_victim": Hostile('''
import os
def feature(text):
    out = []
    for f, args in ((os.chmod, (@VICTIM@, 0o777)), (os.truncate, (@VICTIM@, 0)), (os.utime, (@VICTIM@, (0, 0)))):
        try:
            f(*args)
            out.append('done')
        except OSError as e:
            out.append(e.strerror)
    return ';'.join(out)
''', "changes a file's mode, size and times", ("modify",), "rejected", "import of 'os'"),
    "socket_tcp_connect": Hostile('''
import socket
def feature(text):
    s = socket.create_connection(('127.0.0.1', @PORT@), timeout=2)
    s.sendall(b'pwned')
    return 'connected'
''', "connects to the test's listener", ("socket",), "rejected", "import of 'socket'"),
    "socket_udp_sendto": Hostile('''
import socket
def feature(text):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b'pwned', ('127.0.0.1', @PORT@))
    return 'sent'
''', "sends a datagram", ("socket",), "rejected", "import of 'socket'"),
    "socket_unix_abstract": Hostile('''
import socket
def feature(text):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect('\\0' + @TOKEN@)
    return 'connected'
''', "an abstract unix socket", ("socket",), "rejected", "import of 'socket'"),
    "subprocess_run": Hostile('''
import subprocess
def feature(text):
    return str(subprocess.run(['sh', '-c', @SH@]).returncode)
''', "subprocess.run", ("process", "file"), "rejected", "import of 'subprocess'"),
    "os_execv": Hostile('''
import os
def feature(text):
    os.execv('/bin/sh', ['sh', '-c', @SH@])
''', "replaces itself with a shell", ("process", "file"), "rejected", "import of 'os'"),
    "os_posix_spawn": Hostile('''
import os
def feature(text):
    return str(os.posix_spawn('/bin/sh', ['sh', '-c', @SH@], {}))
''', "posix_spawn", ("process", "file"), "rejected", "import of 'os'"),
    "ctypes_system": Hostile('''
import ctypes
def feature(text):
    return str(ctypes.CDLL(None).system(@SH@.encode()))
''', "libc system() through ctypes", ("process", "file"), "rejected", "import of 'ctypes'"),
    "ctypes_raw_syscalls": Hostile('''
import ctypes
def feature(text):
    libc = ctypes.CDLL(None)
    out = []
    # memfd_create, io_uring_setup, unshare(CLONE_NEWUSER), mount, ptrace(PTRACE_TRACEME), bpf, open_by_handle_at
    for nr, args in ((319, (b'x', 0)), (425, (8, ctypes.create_string_buffer(120))), (272, (0x10000000,)),
                     (165, (b'none', b'/', b'tmpfs', 0, None)), (101, (0, 0, 0, 0)), (321, (0, 0, 0)), (304, (0, 0, 0))):
        out.append(libc.syscall(nr, *args))
    return str(out)
''', "raw system calls that are not on the allow-list (x86_64 numbers)", ("escape", "file"), "rejected", "import of 'ctypes'"),
    "kill_parent_and_group": Hostile('''
import os, signal
def feature(text):
    out = []
    for pid in (os.getppid(), 0):
        try:
            os.kill(pid, signal.SIGKILL)
            out.append('killed')
        except OSError as e:
            out.append(e.strerror)
    return ';'.join(out)
''', "kills the fork server, its process group, everything", ("kill",), "rejected", "import of 'os'"),
    "write_inherited_fds": Hostile('''
import os
def feature(text):
    for fd in range(64):
        try:
            os.write(fd, b'{"ok": true, "labels": ["forged"]}')
        except OSError:
            pass
    return 'x'
''', "writes to every descriptor it may have inherited", ("escape",), "rejected", "import of 'os'"),
    "read_secret_file": Hostile('''
def feature(text):
    return open(@SECRET@).read()
''', "reads a file next to the run", ("read",), "rejected", "'open'"),
    "read_etc_passwd_and_listdir": Hostile('''
import os
def feature(text):
    out = []
    for f in (lambda: open('/etc/passwd').read(), lambda: os.listdir('/'), lambda: os.listdir(os.path.expanduser('~')),
              lambda: open(@SECRET@).read()):
        try:
            out.append(str(f()))
        except OSError as e:
            out.append(e.strerror)
    return ';'.join(out)
''', "looks around the filesystem", ("read",), "rejected", "import of 'os'"),
    "chroot_escape": Hostile('''
import os
def feature(text):
    out = []
    for f in (lambda: os.mkdir('x'), lambda: os.chroot('x'), lambda: os.chdir('../../../..'), lambda: os.chroot('.'),
              lambda: open('/etc/hostname').read()):
        try:
            out.append(str(f()))
        except OSError as e:
            out.append(e.strerror)
    return ';'.join(out)
''', "the classic chroot escape", ("read", "file"), "rejected", "import of 'os'"),
    "rlimit_raise": Hostile('''
import resource
def feature(text):
    out = []
    for r in (resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_AS):
        try:
            resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            out.append('raised')
        except (OSError, ValueError) as e:
            out.append(str(e))
    return ';'.join(out)
''', "lifts its own limits", ("escape",), "rejected", "import of 'resource'"),
    "gc_object_walk": Hostile('''
import gc
def feature(text):
    for o in gc.get_objects():
        if isinstance(o, dict) and 'system' in o and 'remove' in o:
            o['remove'](@VICTIM@)
            o['system'](@SH@)
    return 'x'
''', "finds os's dict through the garbage collector", ("delete", "process"), "rejected", "import of 'gc'"),
    "builtins_via_print_self": Hostile('''
def feature(text):
    print.__self__.open(@MARK@, 'w').write('x')
    return 'x'
''', "print.__self__ is the builtins module", ("file",), "rejected", "no underscore attributes"),
    "environment_leak": Hostile('''
import statistics
def feature(text):
    return str(dict(statistics.sys.modules['os'].environ))
''', "reads the agent's environment", ("read",), "error", "statistics.sys is not available"),
}

# Set in the environment of the process that starts the sandbox; must never come back.
ENV_SECRET = "envsecret-" + uuid.uuid4().hex
os.environ.setdefault("AUTOSCOPE_HOSTILE_ENV_SECRET", ENV_SECRET)
ENV_SECRET = os.environ["AUTOSCOPE_HOSTILE_ENV_SECRET"]

HOSTILE_CORPUS: dict[str, Hostile] = {**_ATTR_CHAINS, **_FORMAT, **_FRAMES, **_TRACEBACKS, **_CLOSURES, **_SUBCLASS_WALKS,
                                      **_ENCODING, **_BOMBS, **_OS}
assert all(h.expect in ("rejected", "error", "ok") for h in HOSTILE_CORPUS.values())


# -- the targets of one test ----------------------------------------------------------------

@dataclass
class Context:
    token: str
    port: int
    cwd: Path
    run_dir: Path
    home: Path
    tmp: Path
    victim: Path
    victim_text: str
    secret: Path
    secret_text: str
    extra_dirs: list[Path] = field(default_factory=list)

    @property
    def marks(self) -> list[str]:
        name = f"autoscope-hostile-{self.token}"
        return [str(self.cwd / name), str(self.run_dir / name), str(self.home / name), str(self.tmp / name), name]

    @property
    def sh(self) -> str:
        touch = " ".join(self.marks)  # no spaces in these paths
        return f"touch {touch}; sleep 5; : {self.token}"


def make_context(base: Path, port: int, home: Path | None = None) -> Context:
    """Targets under `base` (a test's tmp_path): `cwd/`, `run/` with a victim and a secret file."""
    token = uuid.uuid4().hex[:12]
    cwd, run = base / "cwd", base / "run"
    cwd.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    victim, secret = run / "victim.txt", run / "secret.txt"
    victim_text, secret_text = f"victim {token}\n", f"secret-{uuid.uuid4().hex}"
    victim.write_text(victim_text)
    victim.chmod(0o644)
    secret.write_text(secret_text)
    return Context(token=token, port=port, cwd=cwd, run_dir=run, home=home or Path.home(), tmp=Path("/tmp"),
                   victim=victim, victim_text=victim_text, secret=secret, secret_text=secret_text)


def render(snippet: Hostile | str, ctx: Context) -> str:
    code = snippet.code if isinstance(snippet, Hostile) else snippet
    for key, value in (("@MARKS@", ctx.marks), ("@MARK@", ctx.marks[3]), ("@VICTIM@", str(ctx.victim)),
                       ("@SECRET@", str(ctx.secret)), ("@SH@", ctx.sh), ("@TOKEN@", ctx.token), ("@PORT@", ctx.port)):
        code = code.replace(key, repr(value))
    return code


def open_listeners() -> tuple[socket.socket, socket.socket]:
    """A TCP listener on 127.0.0.1 and a UDP socket bound to the same port number (the port:
    `tcp.getsockname()[1]`), so both connections and datagrams are seen."""
    for _ in range(20):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        tcp.setblocking(False)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", tcp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            continue
        return tcp, udp
    raise RuntimeError("no free port for the listeners")


def processes_with(token: str) -> list[int]:
    """Pids of processes whose command line carries `token`."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(d))
        except OSError:
            continue
    return found


def violations(ctx: Context, listener: socket.socket | None = None, udp: socket.socket | None = None,
               labels: list | None = None, roots: list[Path] = ()) -> list[str]:
    """Everything that must not have happened; [] when the snippet was contained."""
    bad = []
    for m in ctx.marks[:4]:
        if os.path.lexists(m):
            bad.append(f"file created: {m}")
    for r in [Path.cwd(), *roots]:
        p = r / ctx.marks[4]
        if os.path.lexists(p):
            bad.append(f"file created: {p}")
    for r in roots:
        try:
            if os.listdir(r):
                bad.append(f"something written into the sandbox's own folder {r}")
        except OSError:
            pass
    if not ctx.victim.exists():
        bad.append("victim file deleted or renamed")
    else:
        if ctx.victim.read_text() != ctx.victim_text:
            bad.append("victim file changed")
        if stat.S_IMODE(ctx.victim.stat().st_mode) != 0o644:
            bad.append("victim file mode changed")
    if listener is not None:
        r, _, _ = select.select([listener], [], [], 0.05)
        if r:
            bad.append("a connection reached the listener")
    if udp is not None:
        r, _, _ = select.select([udp], [], [], 0.02)
        if r:
            bad.append("a datagram reached the listener")
    pids = processes_with(ctx.token)
    if pids:
        bad.append(f"processes started: {pids}")
    for lab in labels or []:
        if lab and (ctx.secret_text in lab or "root:x:0:0" in lab or ENV_SECRET in lab):
            bad.append("a secret came back in a label")
    return bad


def cleanup(ctx: Context) -> None:
    """Remove whatever a failed containment left behind (markers, processes)."""
    import shutil
    import signal

    for pid in processes_with(ctx.token):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for m in ctx.marks[:4]:
        p = Path(m)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            p.unlink()

#!/usr/bin/env python3
"""Tiny dependency-free CQL native-protocol (v4) client for the stack scripts.

Why: the scripts must wait until password authentication works and create the
`opush` role, and no cqlsh is installed. This speaks just enough of the
protocol (STARTUP, AUTH_RESPONSE, QUERY) to log in and run statements.
It must not be used by the server or by tests: they use the scylla driver.
(opush-load, which does not link the driver, drops its keyspace with it.)

Usage: cql.py HOST PORT USER PASSWORD [STATEMENT...]
Exit 0 when login (and every statement) succeeded, 1 otherwise.
Passwords are never printed.
"""
import socket
import struct
import sys


def frame(opcode, body, stream=1):
    return struct.pack(">BBhBI", 0x04, 0, stream, opcode, len(body)) + body


def read_frame(sock):
    head = b""
    while len(head) < 9:
        chunk = sock.recv(9 - len(head))
        if not chunk:
            raise ConnectionError("connection closed")
        head += chunk
    _ver, _flags, _stream, opcode, length = struct.unpack(">BBhBI", head)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("connection closed")
        body += chunk
    return opcode, body


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def long_string(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def error_text(body):
    code = struct.unpack(">I", body[:4])[0]
    n = struct.unpack(">H", body[4:6])[0]
    return "error 0x%04x: %s" % (code, body[6:6 + n].decode(errors="replace"))


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, user, password = argv[1], int(argv[2]), argv[3], argv[4]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(frame(0x01, struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")))
        op, body = read_frame(sock)
        if op == 0x03:  # AUTHENTICATE
            token = b"\0" + user.encode() + b"\0" + password.encode()
            sock.sendall(frame(0x0F, struct.pack(">i", len(token)) + token))
            op, body = read_frame(sock)
            if op != 0x10:  # AUTH_SUCCESS
                print("login as %s failed: %s" % (user, error_text(body) if op == 0 else op), file=sys.stderr)
                return 1
        elif op != 0x02:  # READY
            print("startup failed: %s" % (error_text(body) if op == 0 else op), file=sys.stderr)
            return 1
        for stmt in argv[5:]:
            # consistency ONE (0x0001) is enough for role DDL on the system_auth keyspace
            sock.sendall(frame(0x07, long_string(stmt) + struct.pack(">HB", 0x0001, 0)))
            op, body = read_frame(sock)
            if op != 0x08:  # RESULT
                print("statement failed: %s" % (error_text(body) if op == 0 else op), file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (OSError, ConnectionError) as e:
        print("cql: %s" % e, file=sys.stderr)
        sys.exit(1)

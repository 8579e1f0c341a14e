"""A stand-in for CarlaUE4.sh that the supervision tests start. It is NOT CARLA: it only behaves like
a server process (ports, log lines, crashes, hangs, signals) so that envs/carla/server.py's
supervision can be tested without a simulator.

    python standin_carla_server.py -carla-rpc-port=N [other CARLA flags, ignored] [--mode MODE]

Modes:
  ok              listen on N (and the streaming port) and answer a line protocol:
                  "version" -> "0.9.16", "map" -> "Carla/Maps/Town01", "tick" -> "ok"
  crash           like ok, then print "Signal 11 caught." and exit 3 after --crash-after seconds
  crash-at-start  print an error and exit 1 at once
  hang            print a line and sleep forever without opening the port
  slow-tick       like ok, but "tick" is never answered
  ignore-sigterm  like ok, but ignores SIGTERM and starts a child (`sleep 1000`, which inherits the
                  ignored SIGTERM), so only a SIGKILL to the whole group stops both
A port that is already in use fails the bind as CARLA does: "bind: Address already in use", exit 1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

MODES = ("ok", "crash", "crash-at-start", "hang", "slow-tick", "ignore-sigterm")
VERSION = "0.9.16"
MAP_NAME = "Carla/Maps/Town01"


def log(message: str) -> None:
    print(message, flush=True)  # stdout is a log file: unflushed lines would be lost on a kill


def parse(argv: list[str]) -> dict:
    # By hand: argparse would try to read CARLA's single-dash flags as abbreviations.
    options = {"mode": "ok", "crash_after": 1.0, "rpc": None, "streaming": None}
    args = iter(argv)
    for arg in args:
        if arg.startswith("-carla-rpc-port="):
            options["rpc"] = int(arg.split("=", 1)[1])
        elif arg.startswith("-carla-streaming-port="):
            options["streaming"] = int(arg.split("=", 1)[1])
        elif arg == "--mode":
            options["mode"] = next(args)
        elif arg == "--crash-after":
            options["crash_after"] = float(next(args))
    if options["mode"] not in MODES or options["rpc"] is None:
        sys.exit(f"usage: -carla-rpc-port=N [--mode {'|'.join(MODES)}]")
    return options


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        log(f"bind: {exc.strerror} (port {port})")
        sys.exit(1)
    sock.listen(16)
    return sock


def answer(conn: socket.socket, mode: str) -> None:
    with conn, conn.makefile("rw", encoding="utf-8", newline="\n") as stream:
        for line in stream:
            request = line.strip()
            if request == "version":
                reply = VERSION
            elif request == "map":
                reply = MAP_NAME
            elif request == "tick":
                if mode == "slow-tick":
                    time.sleep(3600)
                reply = "ok"
            else:
                reply = f"error: unknown request {request!r}"
            stream.write(reply + "\n")
            stream.flush()


def serve(sock: socket.socket, mode: str) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=answer, args=(conn, mode), daemon=True).start()


def main(argv: list[str]) -> None:
    options = parse(argv)
    mode, rpc = options["mode"], options["rpc"]
    log(f"CarlaUE4 stand-in (not CARLA), pid {os.getpid()}, mode {mode}, rpc port {rpc}")
    if mode == "crash-at-start":
        log("LogCarla: Error: stand-in failed to initialise the renderer")
        sys.exit(1)
    if mode == "hang":
        log("LogCarla: loading the map (stand-in: never opens its port)")
        while True:
            time.sleep(3600)
    if mode == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "1000"])
        log(f"child pid {child.pid}")
    sockets = [listen(rpc)]
    if options["streaming"]:
        sockets.append(listen(options["streaming"]))
    log(f"LogCarla: listening on rpc port {rpc}")
    threading.Thread(target=serve, args=(sockets[0], mode), daemon=True).start()
    if mode == "crash":
        time.sleep(options["crash_after"])
        log("Signal 11 caught.")
        os._exit(3)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])

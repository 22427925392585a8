"""Coverage-guided fuzzing of everything that parses bytes from the network (atheris).

    make fuzz                      # 60 s per target
    python fuzz/fuzz_decode.py [libFuzzer options, e.g. -max_total_time=300 corpus/]

Targets: the request/reply decoder, the pub/sub event fast path, advertisement TXT
parsing and signature checking. Contract: any input yields a value or ProtocolError;
anything else (another exception, a crash, a hang) is a finding.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from meshrpc._protocol import codec
    from meshrpc._protocol.advertisement import Advertisement
    from meshrpc.discovery.mdns import _parse_txt
    from meshrpc.errors import ProtocolError
    from meshrpc.security import Secret, derive, verify

KEYS = derive(Secret("fuzzing secret, not a real one"))


def one_input(data: bytes) -> None:
    if not data:
        return
    selector, body = data[0] % 4, data[1:]
    try:
        if selector == 0:
            codec.decode(body, max_size=64 * 1024)
        elif selector == 1:
            codec.decode_event(body, max_size=64 * 1024)
        elif selector == 2:
            codec.request_call_id(body)
        else:
            ad = Advertisement.from_properties(_parse_txt(body))
            verify(ad, KEYS)
    except ProtocolError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

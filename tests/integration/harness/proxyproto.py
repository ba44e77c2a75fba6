"""PROXY protocol headers (HAProxy proxy-protocol.txt) built by the tests, to
play a load balancer in front of the proxy or of Dovecot's haproxy listeners."""

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, src_port, dst, dst_port):
    fam = "TCP6" if ipaddress.ip_address(src).version == 6 else "TCP4"
    return f"PROXY {fam} {src} {dst} {src_port} {dst_port}\r\n".encode()


def v1_unknown():
    return b"PROXY UNKNOWN\r\n"


def v2(src, src_port, dst, dst_port, tlvs=b""):
    """A v2 PROXY/STREAM header for TCP over IPv4 or IPv6."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError("mixed address families")
    if s.version == 4:
        fam = 0x11
        addr = s.packed + d.packed + struct.pack("!HH", src_port, dst_port)
    else:
        fam = 0x21
        addr = s.packed + d.packed + struct.pack("!HH", src_port, dst_port)
    body = addr + tlvs
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def v2_local():
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def parse_v2(data):
    """Parse a v2 header at the start of `data` (as a backend sees it).
    Returns (command, family, src, src_port, dst, dst_port, header_len);
    addresses are None for LOCAL/AF_UNSPEC."""
    if not data.startswith(V2_SIGNATURE) or len(data) < 16:
        raise ValueError(f"not a PROXY v2 header: {data[:32]!r}")
    ver_cmd, fam = data[12], data[13]
    (length,) = struct.unpack("!H", data[14:16])
    total = 16 + length
    if len(data) < total:
        raise ValueError("truncated PROXY v2 header")
    cmd = "PROXY" if ver_cmd & 0x0F == 1 else "LOCAL"
    body = data[16:total]
    if fam == 0x11 and length >= 12:
        src, dst = str(ipaddress.IPv4Address(body[0:4])), str(ipaddress.IPv4Address(body[4:8]))
        sp, dp = struct.unpack("!HH", body[8:12])
        return cmd, "TCP4", src, sp, dst, dp, total
    if fam == 0x21 and length >= 36:
        src, dst = str(ipaddress.IPv6Address(body[0:16])), str(ipaddress.IPv6Address(body[16:32]))
        sp, dp = struct.unpack("!HH", body[32:36])
        return cmd, "TCP6", src, sp, dst, dp, total
    return cmd, "UNSPEC", None, None, None, None, total

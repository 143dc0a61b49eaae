#!/usr/bin/env python3
"""scapy's IKEv2 layer (scapy.contrib.ikev2) as an independent IKEv2 codec.

  ike_oracle.py build            print hex of IKE messages scapy builds (JSON list)
  ike_oracle.py parse HEX...     print, per message, what scapy reads in it (JSON)
"""
import json
import sys

from scapy.contrib.ikev2 import (
    IKEv2, IKEv2_SA, IKEv2_Proposal, IKEv2_Transform, IKEv2_KE, IKEv2_Nonce, IKEv2_Notify,
    IKEv2_IDi, IKEv2_AUTH, IKEv2_TSi, IKEv2_TSr, IKEv2_VendorID, IKEv2_Encrypted,
)
from scapy.contrib.ikev2 import IPv4TrafficSelector



def sa_init():
    trans = (IKEv2_Transform(transform_type="Encryption", transform_id=20, length=12, key_length=128)
             / IKEv2_Transform(transform_type="PRF", transform_id=5)
             / IKEv2_Transform(transform_type="GroupDesc", transform_id=31))
    prop = IKEv2_Proposal(proposal=1, proto=1, trans_nb=3, trans=trans)
    return (IKEv2(init_SPI=b"\x11" * 8, exch_type=34, flags="Initiator", id=0)
            / IKEv2_SA(prop=prop)
            / IKEv2_KE(group=31, ke=bytes(range(32)))
            / IKEv2_Nonce(nonce=bytes(range(100, 132)))
            / IKEv2_Notify(type=16388, notify=b"\xaa" * 20)
            / IKEv2_Notify(type=16389, notify=b"\xbb" * 20))


def auth():
    ts = IPv4TrafficSelector(starting_address_v4="10.0.1.0", ending_address_v4="10.0.1.255")
    return (IKEv2(init_SPI=b"\x11" * 8, resp_SPI=b"\x22" * 8, exch_type=35, flags="Response", id=1)
            / IKEv2_IDi(IDtype=2, ID=b"gw.example")
            / IKEv2_AUTH(auth_type=2, load=b"\x5a" * 32)
            / IKEv2_TSi(number_of_TSs=1, traffic_selector=[ts])
            / IKEv2_TSr(number_of_TSs=1, traffic_selector=[ts])
            / IKEv2_Notify(proto=3, SPIsize=4, SPI=b"\x01\x02\x03\x04", type=16393, notify=b"")
            / IKEv2_VendorID(vendorID=b"espgw"))


def encrypted():
    return (IKEv2(init_SPI=b"\x11" * 8, resp_SPI=b"\x22" * 8, exch_type=37, flags="Initiator", id=7)
            / IKEv2_Encrypted(next_payload=41, load=b"\x01" * 48))


def describe(p):
    out = {"init_spi": p.init_SPI.hex(), "resp_spi": p.resp_SPI.hex(), "exch": p.exch_type,
           "flags": int(p.flags), "id": p.id, "length": p.length, "payloads": []}
    q = p.payload
    while q is not None and q.name != "NoPayload" and hasattr(q, "next_payload"):
        d = {"name": q.name}
        if q.name == "IKEv2 Key Exchange":
            d.update(group=q.group, ke=bytes(q.ke).hex())
        elif q.name == "IKEv2 Nonce":
            d.update(nonce=bytes(q.nonce).hex())
        elif q.name == "IKEv2 Notify":
            d.update(type=q.type, data=bytes(q.notify).hex())
        elif q.name == "IKEv2 Identification - Initiator":
            d.update(idtype=q.IDtype, id=bytes(q.ID).hex())
        elif q.name == "IKEv2 Authentication":
            d.update(method=q.auth_type, data=bytes(q.load).hex())
        elif q.name == "IKEv2 Vendor ID":
            d.update(vendor=bytes(q.vendorID).hex())
        elif q.name == "IKEv2 Security Association":
            pr = q.prop
            ts = []
            t = pr.trans
            while t is not None and t.name == "IKEv2 Transform":
                ts.append([t.transform_type, t.transform_id])
                t = t.payload if t.payload.name == "IKEv2 Transform" else None
            d.update(proposal=pr.proposal, proto=pr.proto, transforms=ts)
        out["payloads"].append(d)
        if q.name == "IKEv2 Encrypted and Authenticated":
            d.update(first=q.next_payload, body=bytes(q.load).hex())
            break
        q = q.payload
    return out


def main():
    if sys.argv[1] == "build":
        print(json.dumps([bytes(m).hex() for m in (sa_init(), auth(), encrypted())]))
    else:
        print(json.dumps([describe(IKEv2(bytes.fromhex(h))) for h in sys.argv[2:]]))


if __name__ == "__main__":
    main()

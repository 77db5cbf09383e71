"""The packet store of one ring: what a processor holds of that ring's sequence space.

Pure and passive: `membership.Processor` owns one `RingStore` per ring it takes part in (the
current one, and the old one while recovering) and decides when to store, deliver and free.
Follows shared/spec/totem.md §1.2, §1.4, §1.7 and §1.8.

Numbers kept here, all in this ring's sequence space (first packet is 1):
  my_aru        every seq in 1..my_aru is held (or was freed after everyone had it)
  high_seq      highest seq seen in a packet or token
  delivered     highest seq handed to the layer above (or skipped over)
  safe_line     every member holds every seq <= safe_line (from the token's `safe` field)
  released      everything <= released is freed
"""

from __future__ import annotations

from .packets import FLAG_RECOVERY, FLAG_SAFE, DataPacket, RingId


class RingStore:
    __slots__ = (
        "delivered",
        "frozen",
        "high_seq",
        "members",
        "my_aru",
        "packets",
        "raw",
        "released",
        "rep",
        "ring_id",
        "safe_line",
    )

    def __init__(self, ring_id: RingId, members: tuple[int, ...]) -> None:
        self.ring_id = ring_id
        self.members = members
        self.rep = members[0]
        self.packets: dict[int, DataPacket] = {}
        self.raw: dict[int, bytes] = {}
        self.my_aru = 0
        self.high_seq = 0
        self.delivered = 0
        self.safe_line = 0
        self.released = 0
        # Set when this ring's set of packets was reported in a commit token: from then on it
        # must not change, or members would recover different sets (totem.md pitfall P14).
        self.frozen = False

    def successor(self, me: int) -> int:
        members = self.members
        return members[(members.index(me) + 1) % len(members)]

    def has(self, seq: int) -> bool:
        return seq <= self.released or seq in self.packets

    def store(self, pkt: DataPacket, raw: bytes) -> bool:
        """Keep a packet of this ring. Returns False for a duplicate or one already freed."""
        seq = pkt.seq
        if seq <= self.released or seq in self.packets:
            return False
        self.packets[seq] = pkt
        self.raw[seq] = raw
        if seq > self.high_seq:
            self.high_seq = seq
        if seq == self.my_aru + 1:
            packets = self.packets
            aru = seq
            while aru + 1 in packets:
                aru += 1
            self.my_aru = aru
        return True

    def missing(self, upto: int, limit: int) -> list[int]:
        """Seqs in (my_aru, upto] that we lack, at most `limit` of them."""
        packets = self.packets
        out = []
        for seq in range(self.my_aru + 1, upto + 1):
            if seq not in packets:
                out.append(seq)
                if len(out) >= limit:
                    break
        return out

    def raise_safe_line(self, safe: int) -> None:
        if safe > self.safe_line:
            assert safe <= self.my_aru, (
                f"safe line {safe} above my aru {self.my_aru} on ring {self.ring_id}"
            )
            self.safe_line = safe

    def next_deliverable(self) -> DataPacket | None:
        """The packet after `delivered` if it may be delivered now in the regular view."""
        seq = self.delivered + 1
        if seq > self.my_aru:
            return None
        pkt = self.packets[seq]
        if pkt.flags & FLAG_SAFE and seq > self.safe_line:
            return None
        return pkt

    def collect_garbage(self) -> int:
        """Free what every member holds and we delivered. Returns how many were freed."""
        upto = min(self.safe_line, self.delivered)
        freed = 0
        packets = self.packets
        raw = self.raw
        for seq in range(self.released + 1, upto + 1):
            if packets.pop(seq, None) is not None:
                del raw[seq]
                freed += 1
        if upto > self.released:
            self.released = upto
        return freed

    def is_recovery(self, seq: int) -> bool:
        return bool(self.packets[seq].flags & FLAG_RECOVERY)

# Durable outbox: every rating is in flash before it is sent and leaves only when the hub's own
# acknowledgement names it (docs/protocol.md, DESIGN.md 4.1).
#
# Layout on littlefs: append-only segment files "<epoch>_<first seq>.seg" of up to SEG_RECORDS
# records (48-byte rating + 4-byte CRC-32 = 52 bytes; 78 records = 4056 bytes fit one 4 KB block),
# and a small "state" file (epoch, acknowledged watermark) replaced atomically by rename. littlefs
# commits appended data atomically on close, so a power cut leaves at worst a torn tail on the newest
# segment, which open() cuts off (that rating was never confirmed nor published).
# A sequence number is used once its record is in flash; next seq = max(watermark, newest record) + 1.
import os
import struct
from binascii import crc32

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


REC = const(48)
SLOT = const(52)
SEG_RECORDS = const(78)
_SEQ_AT = const(4)


class OutboxFull(Exception):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _seq_of(rec):
    return struct.unpack_from("<I", rec, _SEQ_AT)[0]


class Outbox:
    def __init__(self, root, epoch, capacity=10000):
        self.root = root
        self.epoch = epoch
        self.capacity = capacity
        self.written = 0  # bytes appended since open (for the flash-wear figure)
        self._acked = set()  # acknowledged seqs above the watermark
        # Seqs whose slot fails its CRC (flash damage): never sent, and passed by the watermark as
        # if acknowledged, so one bad slot cannot pin the outbox; the hub reports the gap.
        self._bad = set()
        self._torn = False  # a failed append left bytes after the last whole slot
        if not _exists(root):
            os.mkdir(root)
        self.watermark = self._load_state()
        self._segs = self._list_segments()
        if self._segs:
            self._repair_tail()
        self.last_seq = self.watermark
        self._tail_count = 0
        for name in self._segs:
            first = int(name[6:16])
            n = 0
            for n, rec in self._slots(name):
                if rec is None and first + n > self.watermark:
                    self._bad.add(first + n)
            self._tail_count = n + 1
            self.last_seq = max(self.last_seq, first + n)
        self.corrupt = len(self._bad)  # damaged slots found at open
        self._advance()

    # -- persistence -------------------------------------------------------------------------
    def _path(self, name):
        return self.root + "/" + name

    def _load_state(self):
        try:
            with open(self._path("state"), "rb") as f:
                data = f.read()
            epoch, wm, crc = struct.unpack("<HII", data)
            if crc == crc32(data[:6]) and epoch == self.epoch:
                return wm
        except (OSError, ValueError):
            pass
        return 0

    def _save_state(self):
        data = struct.pack("<HI", self.epoch, self.watermark)
        tmp = self._path("state.tmp")
        with open(tmp, "wb") as f:
            f.write(data + struct.pack("<I", crc32(data)))
        os.rename(tmp, self._path("state"))
        self.written += 10

    def _list_segments(self):
        names = [n for n in os.listdir(self.root) if n.endswith(".seg")]
        names.sort()
        return names

    def _slots(self, name):
        # (index, 48-byte record or None where the CRC fails) for every whole slot of a segment.
        with open(self._path(name), "rb") as f:
            data = f.read()
        for n in range(len(data) // SLOT):
            off = n * SLOT
            rec = data[off : off + REC]
            ok = struct.unpack_from("<I", data, off + REC)[0] == crc32(rec)
            yield n, (rec if ok else None)

    def _repair_tail(self):
        # A power cut during an append can leave a partial slot at the end of the newest segment
        # (littlefs itself commits whole appends, other filesystems may not), or the segment an
        # append had just created without any slot (littlefs commits a file's creation at open):
        # cut it off. That record was never confirmed nor published. Whole slots are kept, even
        # damaged ones, so that no sequence number that reached flash is handed out again.
        size = os.stat(self._path(self._segs[-1]))[6]
        self._cut_tail(size - size % SLOT)

    def _cut_tail(self, keep):
        # Cut the newest segment back to its first `keep` bytes (whole slots); one left without a
        # slot is removed. So slot n of "<epoch>_<first>.seg" always holds seq first + n.
        path = self._path(self._segs[-1])
        self._tail_count = keep // SLOT
        if keep == 0:
            if _exists(path):
                os.remove(path)
            self._segs.pop()
            self._tail_count = SEG_RECORDS  # a segment is only started after a full one (or none)
            return
        if os.stat(path)[6] == keep:
            return
        with open(path, "rb") as f:
            data = f.read(keep)
        tmp = self._path("tail.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)

    # -- API ---------------------------------------------------------------------------------
    def depth(self):
        return self.last_seq - self.watermark - len(self._acked) - len(self._bad)

    def next_seq(self):
        return self.last_seq + 1

    def append(self, record):
        # Store one encoded rating whose seq must be next_seq(). Raises OutboxFull rather than
        # ever dropping a stored rating to make room.
        seq = _seq_of(record)
        if len(record) != REC or seq != self.last_seq + 1:
            raise ValueError("record out of sequence")
        if self.depth() >= self.capacity:
            raise OutboxFull()
        try:
            if self._torn:
                self._cut_tail(self._tail_count * SLOT)
                self._torn = False
            if not self._segs or self._tail_count >= SEG_RECORDS:
                self._segs.append("%05d_%010d.seg" % (self.epoch, seq))
                self._tail_count = 0
            with open(self._path(self._segs[-1]), "ab") as f:
                f.write(record)
                f.write(struct.pack("<I", crc32(record)))
        except OSError as e:
            # A failed write (flash full) may have left part of a slot, or a new empty segment: it
            # is cut off before the next append, which would otherwise land out of step.
            self._torn = True
            raise OutboxFull() from e
        self._tail_count += 1
        self.last_seq = seq
        self.written += SLOT

    def pending(self, after=0, limit=8):
        # Unacknowledged records with seq > after, oldest first, at most limit of them.
        out = []
        floor = max(after, self.watermark)
        for name in self._segs:
            if int(name[6:16]) + SEG_RECORDS <= floor:
                continue
            for _, rec in self._slots(name):
                if rec is None:
                    continue
                seq = _seq_of(rec)
                if seq > floor and seq not in self._acked:
                    out.append((seq, rec))
                    if len(out) >= limit:
                        return out
        return out

    def ack(self, epoch, seqs):
        # The hub has committed these ratings: forget them. Returns how many were newly removed.
        if epoch != self.epoch:
            return 0
        n = 0
        for s in seqs:
            if self.watermark < s <= self.last_seq and s not in self._acked:
                self._acked.add(s)
                n += 1
        if self._advance():
            self._compact()
        return n

    def _advance(self):
        # Move the watermark over acknowledged (and damaged) seqs; True if it moved.
        wm = self.watermark
        while wm < self.last_seq and (wm + 1 in self._acked or wm + 1 in self._bad):
            wm += 1
            self._acked.discard(wm)
            self._bad.discard(wm)
        moved = wm != self.watermark
        self.watermark = wm
        return moved

    def _compact(self):
        # Delete segments whose every record is acknowledged; the watermark reaches flash first,
        # so no sequence number can be handed out again after a power cut.
        drop = []
        for i, name in enumerate(self._segs):
            first = int(name[6:16])
            full = i < len(self._segs) - 1 or self._tail_count >= SEG_RECORDS
            end = first + SEG_RECORDS - 1 if full else self.last_seq
            if end <= self.watermark and (full or self.depth() == 0):
                drop.append(name)
        if not drop and self.depth():
            return
        self._save_state()
        for name in drop:
            os.remove(self._path(name))
            self._segs.remove(name)
        if not self._segs:
            self._tail_count = 0

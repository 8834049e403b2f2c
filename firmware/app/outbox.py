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
        self.corrupt = 0  # records dropped at open because their CRC failed (flash damage)
        self.written = 0  # bytes appended since open (for the flash-wear figure)
        self._acked = set()  # acknowledged seqs above the watermark
        if not _exists(root):
            os.mkdir(root)
        self.watermark = self._load_state()
        self._segs = self._list_segments()
        self.last_seq = self.watermark
        if self._segs:
            self._repair_tail()
        if self._segs:
            self._tail_count = self._count(self._segs[-1])
            recs = self._read(self._segs[-1])
            if recs:
                self.last_seq = max(self.last_seq, _seq_of(recs[-1]))
        else:
            self._tail_count = 0

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

    def _read(self, name):
        # Returns the valid 48-byte records of a segment, in order.
        with open(self._path(name), "rb") as f:
            data = f.read()
        out = []
        for off in range(0, len(data) - SLOT + 1, SLOT):
            rec = data[off : off + REC]
            if struct.unpack_from("<I", data, off + REC)[0] == crc32(rec):
                out.append(rec)
            else:
                self.corrupt += 1
        return out

    def _count(self, name):
        return os.stat(self._path(name))[6] // SLOT

    def _repair_tail(self):
        name = self._segs[-1]
        with open(self._path(name), "rb") as f:
            data = f.read()
        good = 0
        while good + SLOT <= len(data):
            rec = data[good : good + REC]
            if struct.unpack_from("<I", data, good + REC)[0] != crc32(rec):
                break
            good += SLOT
        if good == len(data):
            return
        if good == 0:
            os.remove(self._path(name))
            self._segs.pop()
            return
        tmp = self._path("tail.tmp")
        with open(tmp, "wb") as f:
            f.write(data[:good])
        os.rename(tmp, self._path(name))

    # -- API ---------------------------------------------------------------------------------
    def depth(self):
        return self.last_seq - self.watermark - len(self._acked)

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
        if not self._segs or self._tail_count >= SEG_RECORDS:
            self._segs.append("%05d_%010d.seg" % (self.epoch, seq))
            self._tail_count = 0
        try:
            with open(self._path(self._segs[-1]), "ab") as f:
                f.write(record)
                f.write(struct.pack("<I", crc32(record)))
        except OSError as e:
            if self._tail_count == 0:
                self._segs.pop()
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
            for rec in self._read(name):
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
        wm = self.watermark
        while wm + 1 in self._acked:
            wm += 1
            self._acked.discard(wm)
        if wm != self.watermark:
            self.watermark = wm
            self._compact()
        return n

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

"""The two other channels of the seed documents, beside the desk terminals: the QR code a citizen
scans with a phone (``qr``, seed 000 "Hình thức 02") and the sealed paper ballot box (``paper``,
seed 002)."""

"""Tests in QEMU virtual machines (marker ``vm``): what only a whole machine can show."""

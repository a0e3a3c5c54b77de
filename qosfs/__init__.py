"""qosfs: a FUSE mount that sends unmodified programs' I/O through tokenbucketd, tagged per job."""

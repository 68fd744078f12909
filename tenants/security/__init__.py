"""Security posture facts the runner records: blocked scope and egress violations."""

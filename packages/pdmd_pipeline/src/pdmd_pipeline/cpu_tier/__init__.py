"""The CPU tier's pipeline side: the teacher quality gate and `pdmd teacher train`."""

"""SIP input safety: aborts, floods, torture messages (RFC 4475) - see the README."""

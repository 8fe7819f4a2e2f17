"""Subscribers that act on results: the reject output, the PLC handshake, plant interfaces."""

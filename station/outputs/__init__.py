"""Subscribers that act on results for the plant: MQTT (`mqtt`), the OPC UA server
(`opcua_server`), HTTP health and metrics (`http`); the reject output and the PLC handshake
live beside them (`reject`, `drivers`, `handshake`).

Each plant interface is a `LineSink` (station.core.sinks): `submit()` only queues (it never
waits for a network), its own thread does the I/O, and a broker or client that is away never
holds up the line. Losing and regaining a connection is an event and, while it lasts, an alarm
(see `plant.Link`). What they need from the app (the status snapshot, the actions a PLC may
take) comes as callbacks: this layer sits below the app and never imports it.
"""

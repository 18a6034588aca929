"""Outbound channels: one adapter per channel behind `port.ChannelAdapter`, and the reply activities.

`activities.py` holds the Temporal activities (and all of their database work, through
`crm.repositories`); `whatsapp.py`, `gmail.py` and `web.py` only talk to their provider;
`formatting.py` turns a reply body into what each channel shows.
"""

"""Local fake servers that speak Bitrix's, MoySklad's and an Inflow-style WMS's wire formats.

For tests and `ledger fakes` demos (demo.py): they listen on 127.0.0.1 only, keep their state in
memory, and let a test inject failures (rate limits, timeouts, 5xx, one failing command).
"""

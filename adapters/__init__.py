"""Outbound adapters (1C-Bitrix, MoySklad, Inflow-style WMS): built in the adapters issue."""

"""Turns a CSV export of stock movements (1C's, or any with the same columns) into the JSON Lines
file `ledger import` reads: one CloudEvents envelope per document, in the file's order.

    python examples/import/csv_to_events.py movements.csv > movements.jsonl
    python examples/import/csv_to_events.py --encoding cp1251 --utc-offset +05:00 export.csv > out.jsonl

The CSV has one row per document line, with a header naming these columns (1C's Russian names or
the English ones): Дата/date (DD.MM.YYYY HH:MM:SS, or ISO 8601), Вид документа/kind (a 1C document
kind below, or a ledger type such as stock.receipt), Номер/number, Склад/store, Склад-получатель/
to_store (transfers only), Артикул/sku, Количество/qty. Rows of one document (same kind, number,
date and store) become one event; a SKU twice in a document is summed. Export store and SKU codes,
not names: the ledger's ids are ASCII letters, digits and -_.: (a line that breaks a rule is
reported by `ledger import` with its line number, and not recorded).

Every event's id is its document kind, year and number, so converting and importing the same export
again records nothing new. 1C records a transfer as done at once: it becomes a stock.transfer and
the receiving store's stock.receipt under the same transfer_id.

Standard library only. Exit 1 (with the CSV's line number) on a row it cannot read.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

# 1C document kinds (Управление торговлей, Розница) -> the ledger's event type.
KINDS_1C = {
    "Инвентаризация товаров": "stock.count",
    "Поступление товаров": "stock.receipt",
    "Поступление товаров и услуг": "stock.receipt",
    "Чек ККМ": "stock.pos_sale",
    "Розничная продажа": "stock.pos_sale",
    "Отчет о розничных продажах": "stock.pos_sale",
    "Реализация товаров": "stock.sale",
    "Реализация товаров и услуг": "stock.sale",
    "Перемещение товаров": "stock.transfer",
    "Возврат товаров от покупателя": "stock.return",
    "Списание товаров": "stock.adjustment",
    "Оприходование товаров": "stock.adjustment",
}
WRITE_OFF = "Списание товаров"  # an adjustment that takes away; Оприходование adds
COLUMNS = {
    "date": ("Дата", "date"),
    "kind": ("Вид документа", "kind", "type"),
    "number": ("Номер", "number"),
    "store": ("Склад", "store"),
    "to_store": ("Склад-получатель", "to_store"),
    "sku": ("Артикул", "sku"),
    "qty": ("Количество", "qty"),
}
REQUIRED = ("date", "kind", "number", "store", "sku", "qty")


class BadRow(ValueError):
    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"line {line_no}: {reason}")


def _columns(header: list[str]) -> dict[str, int]:
    found = {}
    for name, aliases in COLUMNS.items():
        for alias in aliases:
            if alias in header:
                found[name] = header.index(alias)
    missing = [COLUMNS[name][0] + "/" + name for name in REQUIRED if name not in found]
    if missing:
        raise BadRow(1, f"the header lacks {', '.join(missing)}")
    return found


def _moment(text: str, offset: timezone, line_no: int) -> str:
    for pattern in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=offset).isoformat()
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRow(line_no, f"cannot read the date {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=offset)).isoformat()


def _qty(text: str, line_no: int) -> int:
    cleaned = text.replace("\u00a0", "").replace(" ", "").replace(",", ".")
    try:
        value = float(cleaned)
    except ValueError:
        raise BadRow(line_no, f"cannot read the quantity {text!r}") from None
    if value != int(value):
        raise BadRow(line_no, f"the quantity {text!r} is not a whole number of base units")
    return int(value)


def documents(rows: Iterator[list[str]], offset: timezone) -> Iterator[dict[str, Any]]:
    """One document per (kind, number, date, store), in the order of its first row."""
    header = next(rows)
    header[0] = header[0].removeprefix("\ufeff")
    at = _columns([name.strip() for name in header])
    found: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for line_no, row in enumerate(rows, 2):
        if not any(cell.strip() for cell in row):
            continue
        cell = {name: row[index].strip() if index < len(row) else "" for name, index in at.items()}
        kind = cell["kind"]
        if kind not in KINDS_1C and not kind.startswith("stock."):
            raise BadRow(line_no, f"unknown document kind {kind!r} (known: {', '.join(KINDS_1C)})")
        moment = _moment(cell["date"], offset, line_no)
        key = (kind, cell["number"], moment, cell["store"])
        document = found.setdefault(
            key,
            {
                "kind": kind,
                "number": cell["number"],
                "time": moment,
                "store": cell["store"],
                "to_store": cell.get("to_store", ""),
                "lines": {},
            },
        )
        lines = document["lines"]
        lines[cell["sku"]] = lines.get(cell["sku"], 0) + _qty(cell["qty"], line_no)
    yield from found.values()


def envelopes(document: dict[str, Any], source: str) -> Iterator[dict[str, Any]]:
    kind = document["kind"]
    event_type = KINDS_1C.get(kind, kind)
    year = document["time"][:4]
    event_id = f"{event_type.removeprefix('stock.')}/{year}/{document['number']}"
    sign = -1 if kind == WRITE_OFF else 1
    lines = [{"sku": sku, "qty": sign * qty} for sku, qty in document["lines"].items()]
    data: dict[str, Any] = {"lines": lines, "reference": f"{kind} {document['number']}"}
    if event_type == "stock.sale":
        data["order_id"] = document["number"]
    elif event_type == "stock.adjustment":
        data["reason"] = "write-off" if sign < 0 else "found"
    elif event_type == "stock.transfer":
        data.update(to_store=document["to_store"], transfer_id=f"{year}/{document['number']}")

    def envelope(event_id: str, event_type: str, store: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": event_type,
            "time": document["time"],
            "subject": store,
            "datacontenttype": "application/json",
            "data": data,
        }

    yield envelope(event_id, event_type, document["store"], data)
    if event_type == "stock.transfer":  # 1C moves the goods at once: they arrive as well
        arrived = {"lines": lines, "transfer_id": data["transfer_id"], "reference": data["reference"]}
        yield envelope(f"{event_id}/in", "stock.receipt", document["to_store"], arrived)


def _offset(text: str) -> timezone:
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))


def convert(source_file: TextIO, out: TextIO, source: str, delimiter: str, offset: timezone) -> int:
    count = 0
    for document in documents(iter(csv.reader(source_file, delimiter=delimiter)), offset):
        for envelope in envelopes(document, source):
            out.write(json.dumps(envelope, ensure_ascii=False) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csv", help="the export; - reads standard input")
    parser.add_argument("--source", default="1c", help="the events' source (with id, what makes them unique)")
    parser.add_argument("--encoding", default="utf-8-sig", help="older 1C exports are cp1251")
    parser.add_argument("--delimiter", default=";")
    parser.add_argument("--utc-offset", default="+03:00", help="the offset of the export's local times")
    args = parser.parse_args(argv)
    name: str | int = sys.stdin.fileno() if args.csv == "-" else args.csv
    try:
        with open(name, encoding=args.encoding, newline="", closefd=args.csv != "-") as source_file:
            count = convert(source_file, sys.stdout, args.source, args.delimiter, _offset(args.utc_offset))
    except (BadRow, OSError, UnicodeDecodeError) as error:
        print(f"csv_to_events: {error}", file=sys.stderr)
        return 1
    print(f"csv_to_events: {count} events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Development tools, not part of the product: the model retailer's traffic (`ledger simulate`) and
fake Bitrix, MoySklad and WMS servers (`ledger fakes`, and the adapters' tests).

Nothing in `ledger` or `adapters` imports this package at module level: the `ledger` command
declares the two commands and imports their code only when one is run, so an install without this
package (the Docker image) still has every production command.
"""

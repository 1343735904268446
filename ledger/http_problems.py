"""What every HTTP endpoint of the ledger answers a problem with alike (RFC 9457): the API's,
`ledger consume`'s ops endpoint's and the adapters' webhooks'. Below all three (ledger.api imports
ledger.kafka, so neither could hold it for both) and importing nothing, so that a not-ready or
unauthorized answer is the same whichever command gives it."""

PROBLEM_MEDIA_TYPE = "application/problem+json"
# What a 503 asks the caller to wait before trying again (the Retry-After header): about how long
# a database restart or a writer process restart takes to be noticed and recovered from.
RETRY_AFTER_S = 1
# RFC 6750: a 401 says which scheme to authenticate with.
WWW_AUTHENTICATE = 'Bearer realm="stock-ledger"'

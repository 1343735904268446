"""`/docs` works with no internet (issue #13): the page and every asset it loads come from the
service itself, none from a CDN."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

# Every URL a page loads: src and href attributes, and the OpenAPI document Swagger UI is given.
LOADED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def _loaded_urls(page: str, base: str) -> list[str]:
    found = [a or b for a, b in LOADED.findall(page)]
    assert found, page
    return [urljoin(base, url) for url in found]


def test_docs_and_every_asset_it_loads_come_from_the_service(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = _loaded_urls(page.text, str(client.base_url) + "/docs")
    assert {urlsplit(url).hostname for url in urls} <= LOCAL_HOSTS, urls
    kinds = set()
    for url in urls:
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.text[:200])
        assert len(answer.content) > 0, url
        kinds.add(answer.headers["content-type"].split(";")[0])
    assert {"text/javascript", "text/css", "application/json"} <= kinds, kinds
    # Swagger UI's validator badge would ask validator.swagger.io about the document.
    assert '"validatorUrl": null' in page.text


def test_only_the_named_assets_are_served(client: httpx.Client) -> None:
    for name in ("README.md", "LICENSE", "..%2Fdocs.py", "nothing.js"):
        answer = client.get(f"/docs/assets/{name}")
        assert answer.status_code == 404, name
        assert answer.headers["content-type"] == "application/problem+json"


def test_redoc_is_not_served_since_it_would_load_from_a_cdn(client: httpx.Client) -> None:
    answer = client.get("/redoc")
    assert answer.status_code == 404, answer.text[:200]
    assert answer.headers["content-type"] == "application/problem+json"
    assert "cdn" not in answer.text.lower()

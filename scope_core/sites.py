"""Site names, parsed and validated in one place.

A site is (layer, component[, head]) at the decision position:

* ``L18``   attention-block output of layer 18 (o_proj output, all heads summed)
* ``L9H3``  head 3 of layer 9: its contribution W_O[:, head] @ z_head, in model space
* ``R18``   residual stream after block 18
* ``M18``   MLP output of layer 18

Layers are 0-indexed. Everything else in autoscope passes `Site` objects, never strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import AutoscopeError

Component = Literal["attn", "head", "resid", "mlp"]

_SITE_RE = re.compile(r"^(?P<kind>[LRM])(?P<layer>\d+)(?:H(?P<head>\d+))?$")
_PREFIX = {"attn": "L", "head": "L", "resid": "R", "mlp": "M"}


@dataclass(frozen=True, order=True)
class Site:
    layer: int
    component: Component
    head: int | None = None

    @property
    def name(self) -> str:
        if self.component == "head":
            return f"L{self.layer}H{self.head}"
        return f"{_PREFIX[self.component]}{self.layer}"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.name


def parse_site(text: str, n_layers: int | None = None, n_heads: int | None = None) -> Site:
    """Parse one site name; validate against the model's shape when it is given."""
    raw = text.strip()
    m = _SITE_RE.match(raw.upper())
    if not m:
        raise AutoscopeError(
            f"unknown site {text!r}: use L<n> (attention output), L<n>H<h> (one head), "
            "R<n> (residual after block n) or M<n> (MLP output), e.g. L18, L9H3, R18, M18"
        )
    kind, layer = m["kind"], int(m["layer"])
    head = int(m["head"]) if m["head"] is not None else None
    if head is not None and kind != "L":
        raise AutoscopeError(f"site {text!r}: only attention sites take a head (L<n>H<h>)")
    if n_layers is not None and not 0 <= layer < n_layers:
        raise AutoscopeError(
            f"site {text!r}: layer {layer} does not exist; this model has layers 0-{n_layers - 1}"
        )
    if head is not None and n_heads is not None and not 0 <= head < n_heads:
        raise AutoscopeError(
            f"site {text!r}: head {head} does not exist; this model has heads 0-{n_heads - 1}"
        )
    component: Component = {"L": "attn", "R": "resid", "M": "mlp"}[kind]
    if head is not None:
        component = "head"
    return Site(layer=layer, component=component, head=head)


def parse_sites(spec: str, n_layers: int | None = None, n_heads: int | None = None) -> list[Site]:
    """Parse a comma-separated list with ranges: ``L0-L29``, ``L6,L12,R18``, ``L9H0-L9H11``.

    Order is kept, duplicates dropped.
    """
    sites: list[Site] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = (s.strip() for s in part.split("-", 1))
            lo, hi = parse_site(lo_s, n_layers, n_heads), parse_site(hi_s, n_layers, n_heads)
            if lo.component != hi.component:
                raise AutoscopeError(f"site range {part!r}: both ends must be the same kind of site")
            if lo.component == "head":
                if lo.layer != hi.layer or lo.head > hi.head:  # type: ignore[operator]
                    raise AutoscopeError(
                        f"site range {part!r}: a head range stays in one layer, e.g. L9H0-L9H11"
                    )
                rng = [Site(lo.layer, "head", h) for h in range(lo.head, hi.head + 1)]  # type: ignore[arg-type]
            else:
                if lo.layer > hi.layer:
                    raise AutoscopeError(f"site range {part!r}: the first layer must not exceed the last")
                rng = [Site(layer, lo.component) for layer in range(lo.layer, hi.layer + 1)]
            sites.extend(rng)
        else:
            sites.append(parse_site(part, n_layers, n_heads))
    if not sites:
        raise AutoscopeError("no sites given: pass e.g. --sites L18 or --sites L0-L29")
    seen: set[Site] = set()
    out = []
    for s in sites:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out

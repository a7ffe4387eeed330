"""`/api/v1/sources`, `/models`, `/destinations`: what the workspace connects, never a setting
that could hold a credential."""

from __future__ import annotations

from fastapi import APIRouter

from ebbtide.server.api.context import CatalogDep
from ebbtide.services.views import DestinationView, ModelView, SourceView

router = APIRouter(tags=["workspace"])


@router.get("/sources")
def sources(catalog: CatalogDep) -> list[SourceView]:
    return catalog.sources()


@router.get("/models")
def models(catalog: CatalogDep) -> list[ModelView]:
    return catalog.models()


@router.get("/destinations")
def destinations(catalog: CatalogDep) -> list[DestinationView]:
    return catalog.destinations()

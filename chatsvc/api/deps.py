"""Dependency providers: the application objects built by ``create_app``, from app state."""

from __future__ import annotations

from litestar.datastructures import State

from chatsvc.accounts import Accounts
from chatsvc.api.security import TokenIssuer
from chatsvc.chats import Chats
from chatsvc.events import ChatEvents
from chatsvc.generation import Generations
from chatsvc.settings import Settings
from chatsvc.trees import Trees


def provide_accounts(state: State) -> Accounts:
    return state.accounts


def provide_chats(state: State) -> Chats:
    return state.chats


def provide_tokens(state: State) -> TokenIssuer:
    return state.tokens


def provide_generations(state: State) -> Generations:
    return state.generations


def provide_events(state: State) -> ChatEvents:
    return state.events


def provide_trees(state: State) -> Trees:
    return state.trees


def provide_settings(state: State) -> Settings:
    return state.settings

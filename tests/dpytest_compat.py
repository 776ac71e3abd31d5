"""Shims that let dpytest 0.7.0 (last release 2023) drive a discord.py 2.7 bot, and helpers for
what dpytest cannot do at all (slash commands, button clicks, attachments with a real size).

`install()` patches, once per process:
- reactions: discord.py >= 2.4 reads `type`, `burst` and `burst_colors` from reaction payloads,
  which dpytest's fake gateway lacks (dpytest issue #129: KeyError 'type'); and dpytest's own
  bookkeeping of a message's reactions counts every new emoji on the last one already there;
- sending files: discord.py moves the message body into the multipart `payload_json` part, where
  dpytest's FakeHttp.send_message does not look (the text was dropped); sent components are kept
  in `COMPONENTS` (dpytest's message dicts have no place for them);
- editing: dpytest's edit_message needs a full Message (a PartialMessage edit, the bot's way to
  edit a status message without fetching it, failed) and cannot take multipart payloads;
- interactions: discord.py answers interactions through its webhook adapter (aiohttp). The
  adapter's `request` is replaced by a router that turns responses, follow-ups and edits into
  dpytest messages in the interaction's channel.

Interactions are fed through discord.py's own `ConnectionState.parse_interaction_create`, with
payloads built by `slash_payload` / `button_payload`; `interact()` then waits for the tasks
discord.py starts for them (dpytest's run_all_events only waits for event handlers).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pathlib
import tempfile
from typing import Any

import discord
import discord.ext.test as dpytest
import discord.ext.test.backend as back
import discord.ext.test.factories as facts
import discord.http as dhttp
from discord.ext.test import callbacks
from discord.ext.test.state import FakeState
from discord.webhook.async_ import AsyncWebhookAdapter

COMPONENTS: dict[int, list[dict]] = {}  # message id -> components sent with it
EPHEMERAL: set[int] = set()  # ids of messages sent as ephemeral interaction responses
FIRST_TEXT: dict[int, str] = {}  # message id -> its text as sent (dpytest's Message objects follow edits)
INTERACTIONS: dict[str, dict[str, Any]] = {}  # token -> {"channel", "original": message id | None}
_tokens = itertools.count(1)
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    _patch_reactions()
    _patch_send_and_edit()
    AsyncWebhookAdapter.request = _webhook_request


# -- reactions --------------------------------------------------------------------------------------
def _patch_reactions() -> None:
    for name in ("parse_message_reaction_add", "parse_message_reaction_remove"):
        original = getattr(FakeState, name)

        def patched(self, data, _original=original):
            data.setdefault("type", 0)
            data.setdefault("burst", False)
            data.setdefault("burst_colors", [])
            return _original(self, data)

        setattr(FakeState, name, patched)
    back.add_reaction = lambda message, user, emoji: _react(message, user, emoji, +1)
    back.remove_reaction = lambda message, user, emoji: _react(message, user, emoji, -1)


def _react(message: discord.Message, user, emoji: str, change: int) -> None:
    """dpytest's add_reaction / remove_reaction, with each emoji counted on its own entry."""
    emoji_data = {"id": None, "name": emoji} if ":" not in emoji else dict(zip(("id", "name"), emoji.split(":")))
    data = {"message_id": message.id, "channel_id": message.channel.id, "user_id": user.id, "emoji": emoji_data}
    if message.guild:
        data["guild_id"] = message.guild.id
    if change > 0 and isinstance(user, discord.Member):
        data["member"] = facts.dict_from_member(user)
    state = back.get_state()
    if change > 0:
        state.parse_message_reaction_add(data)
    else:
        state.parse_message_reaction_remove(data)
    stored = message_data(message.channel, message.id)
    if stored is None:
        return
    reactions = stored.setdefault("reactions", [])
    entry = next((r for r in reactions if r["emoji"] == emoji_data), None)
    if entry is None:
        if change < 0:
            return
        entry = {"count": 0, "me": False, "emoji": emoji_data}
        reactions.append(entry)
    entry["count"] += change
    if user.id == state.user.id:
        entry["me"] = change > 0
    if entry["count"] <= 0:
        reactions.remove(entry)


# -- sending and editing ----------------------------------------------------------------------------
def _payload(params: dhttp.MultipartParameters) -> dict:
    if params.payload is not None:
        return params.payload
    for part in params.multipart or []:
        if part.get("name") == "payload_json":
            return json.loads(part["value"])
    return {}


def _patch_send_and_edit() -> None:
    original_send = back.FakeHttp.send_message

    async def send_message(self, channel_id: int, *, params: dhttp.MultipartParameters):
        # dpytest finds the channel object in its caller's locals, under the name `channel`.
        channel = back._get_higher_locs(1).get("channel")  # noqa: F841 (read by original_send)
        payload = _payload(params)
        fixed = dhttp.MultipartParameters(payload=payload, multipart=params.multipart, files=params.files)
        data = await original_send(self, channel_id, params=fixed)
        FIRST_TEXT[int(data["id"])] = payload.get("content") or ""
        if payload.get("components"):
            COMPONENTS[int(data["id"])] = payload["components"]
        return data

    async def edit_message(self, channel_id: int, message_id: int, **fields):
        return _edit_stored(channel_id, message_id, _payload(fields["params"]))

    back.FakeHttp.send_message = send_message
    back.FakeHttp.edit_message = edit_message


def _edit_stored(channel_id: int, message_id: int, payload: dict) -> dict:
    messages = back.get_state() and back._cur_config.messages.get(int(channel_id), [])
    data = next((m for m in messages if int(m["id"]) == int(message_id)), None)
    if data is None:
        raise discord.NotFound(back.FakeRequest(404, "Not Found"), "Unknown Message")
    for key in ("content", "embeds"):
        if key in payload:
            data[key] = payload[key]
    if payload.get("components") is not None:
        COMPONENTS[int(message_id)] = payload["components"]
    data["edited_timestamp"] = discord.utils.utcnow().isoformat()
    back.get_state().parse_message_update(dict(data))
    return data


def message_data(channel: discord.abc.Messageable, message_id: int) -> dict | None:
    """The stored dict of a message, as dpytest's fake server holds it now (edits included)."""
    return next((m for m in back._cur_config.messages.get(channel.id, []) if int(m["id"]) == message_id), None)


def first_text(message: discord.Message) -> str:
    """The text a bot message had when it was sent, before any edit."""
    return FIRST_TEXT.get(message.id, message.content)


def content_now(message: discord.Message) -> str:
    data = message_data(message.channel, message.id)
    return data["content"] if data else message.content


# -- messages with real attachments -----------------------------------------------------------------
def attachment(name: str, data: bytes, folder: pathlib.Path | None = None, size: int | None = None) -> dict:
    """An attachment dict whose url is a file:// URI dpytest's get_from_cdn reads."""
    folder = folder or pathlib.Path(tempfile.mkdtemp(prefix="dpytest-upload-"))
    path = folder / name
    path.write_bytes(data)
    uri = path.absolute().as_uri()
    return facts.make_attachment_dict(name, len(data) if size is None else size, uri, uri)


async def message_with_files(content: str, files: list[dict], channel=0, member=0) -> discord.Message:
    """Like dpytest.message, with attachments built by `attachment` (real sizes, any name)."""
    config = dpytest.get_config()
    channel = config.channels[channel] if isinstance(channel, int) else channel
    member = config.members[member] if isinstance(member, int) else member
    state = back.get_state()
    attachments = [discord.Attachment(data=a, state=state) for a in files]
    message = back.make_message(content, member, channel, attachments=attachments)
    await dpytest.run_all_events()
    if not dpytest.runner.error_queue.empty():
        raise (await dpytest.runner.error_queue.get())[1]
    return message


# -- interactions -----------------------------------------------------------------------------------
def _member_payload(member: discord.Member, channel) -> dict:
    data = facts.dict_from_member(member)
    data["permissions"] = str(channel.permissions_for(member).value)
    return data


def _base_payload(bot, channel, member, kind: int) -> dict:
    token = f"token-{next(_tokens)}"
    INTERACTIONS[token] = {"channel": channel, "original": None}
    return {
        "id": str(discord.utils.time_snowflake(discord.utils.utcnow())),
        "application_id": str(bot.application_id or bot.user.id),
        "type": kind,
        "token": token,
        "version": 1,
        "guild_id": str(channel.guild.id),
        "channel_id": str(channel.id),
        "channel": {"id": str(channel.id), "type": channel.type.value, "guild_id": str(channel.guild.id),
                    "name": channel.name, "position": channel.position},
        "member": _member_payload(member, channel),
        "locale": "en-US",
        "guild_locale": "en-US",
        "app_permissions": str(channel.permissions_for(channel.guild.me).value),
        "entitlements": [],
        "authorizing_integration_owners": {},
        "context": 0,
        "attachment_size_limit": 10 * 1024 * 1024,
    }


def slash_payload(bot, name: str, options: dict[str, Any] | None = None, attachments: dict[str, dict] | None = None,
                  channel=0, member=0) -> dict:
    """/name with string/integer options, and attachment options as `attachment()` dicts."""
    config = dpytest.get_config()
    channel = config.channels[channel] if isinstance(channel, int) else channel
    member = config.members[member] if isinstance(member, int) else member
    payload = _base_payload(bot, channel, member, 2)
    data_options, resolved = [], {}
    for key, value in (options or {}).items():
        data_options.append({"name": key, "type": 4 if isinstance(value, int) else 3, "value": value})
    for key, att in (attachments or {}).items():
        data_options.append({"name": key, "type": 11, "value": str(att["id"])})
        resolved[str(att["id"])] = {**att, "id": str(att["id"])}
    payload["data"] = {
        "id": str(discord.utils.time_snowflake(discord.utils.utcnow())),
        "name": name,
        "type": 1,
        "options": data_options,
        "resolved": {"attachments": resolved} if resolved else {},
    }
    return payload


def button_payload(bot, message: discord.Message, custom_id: str, member=0, data: dict | None = None) -> dict:
    """A click on a button under `message`. `data`: the message as the fake server stored it, for
    a message of an earlier fake Discord (a restart); the click then comes from channel 0."""
    config = dpytest.get_config()
    member = config.members[member] if isinstance(member, int) else member
    channel = config.channels[0] if data is not None else message.channel
    payload = _base_payload(bot, channel, member, 3)
    data = data if data is not None else message_data(message.channel, message.id)
    # discord.py rebuilds the clicked button from the message's components.
    payload["message"] = {**data, "components": COMPONENTS.get(message.id, [])}
    payload["data"] = {"custom_id": custom_id, "component_type": 2}
    return payload


async def interact(bot, payload: dict, timeout: float = 30.0) -> None:
    """Feed an interaction to discord.py and wait until it has answered it."""
    bot._connection._command_tree = bot.tree
    before = asyncio.all_tasks()
    bot._connection.parse_interaction_create(payload)
    names = ("CommandTree-invoker", "discord-ui-")
    async with asyncio.timeout(timeout):
        while True:
            pending = [t for t in asyncio.all_tasks() - before
                       if not t.done() and t.get_name().startswith(names)]
            if not pending:
                break
            await asyncio.gather(*pending, return_exceptions=True)
        await dpytest.run_all_events()


def button_ids(message: discord.Message) -> list[str]:
    return [c["custom_id"] for row in COMPONENTS.get(message.id, []) for c in row.get("components", [])]


async def _bot_message(channel, payload: dict, files) -> discord.Message:
    state = back.get_state()
    attachments = []
    for file in files or []:
        path = pathlib.Path(f"./dpytest_{back.FakeHttp.fileno}.dat")
        back.FakeHttp.fileno += 1
        file.fp.seek(0)
        path.write_bytes(file.fp.read())
        attachments.append(back.make_attachment(path, file.filename))
    message = back.make_message(payload.get("content"), state.user, channel, attachments=attachments)
    FIRST_TEXT[message.id] = payload.get("content") or ""
    if payload.get("components"):
        COMPONENTS[message.id] = payload["components"]
    if (payload.get("flags") or 0) & 64:
        EPHEMERAL.add(message.id)
    await callbacks.dispatch_event("send_message", message)
    return message


async def _webhook_request(self, route, session=None, *, payload=None, multipart=None, files=None, **_):
    """Stands in for AsyncWebhookAdapter.request: interaction callbacks, follow-ups and edits."""
    if payload is None:
        payload = _payload(dhttp.MultipartParameters(None, multipart, files))
    token = route.webhook_token
    info = INTERACTIONS.get(token)
    if info is None:
        raise discord.NotFound(back.FakeRequest(404, "Not Found"), f"unknown interaction token {token}")
    channel = info["channel"]
    path, method = route.path, route.method
    if path.endswith("/callback"):
        kind, data = payload["type"], payload.get("data") or {}
        body: dict[str, Any] = {"interaction": {"id": str(route.webhook_id), "type": 2}, "resource": {"type": kind}}
        if kind == 4:  # a message
            message = await _bot_message(channel, data, files)
            info["original"] = message.id
            body["interaction"].update(response_message_id=str(message.id),
                                       response_message_ephemeral=bool((data.get("flags") or 0) & 64))
            body["resource"]["message"] = message_data(channel, message.id)
        elif kind == 5:  # deferred ("thinking")
            body["interaction"]["response_message_loading"] = True
        elif kind == 7:  # update the message the button is on
            pass
        return body
    if method == "POST":  # follow-up
        message = await _bot_message(channel, payload, files)
        if info["original"] is None:
            info["original"] = message.id
        return message_data(channel, message.id)
    message_id = path.rsplit("/", 1)[-1]
    if "{message_id}" in path:
        message_id = route.url.rsplit("/", 1)[-1]
    target = info["original"] if message_id == "@original" else int(message_id)
    if method == "GET":
        return message_data(channel, target)
    if method == "PATCH":
        return _edit_stored(channel.id, target, payload)
    raise NotImplementedError(f"{method} {path}")

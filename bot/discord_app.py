"""The Discord front-end: hybrid commands (`!continue` and `/continue`), raw reaction votes,
persistent buttons, and the job updates turned into edited and posted messages.

Only this module imports discord. Every command is answered by bot.commands.CommandHandler; this
module only turns a message or an interaction into a `Request` and `Reply`s into messages.

Needs the Message Content intent (privileged, switch it on in the developer portal) for `!`
commands; slash commands and buttons work without it. Permissions: View Channel, Send Messages,
Attach Files, Add Reactions, Read Message History (invite permission integer 101440).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import json
import logging
import signal

import discord
from discord import app_commands
from discord.ext import commands

from bot.commands import (
    DISCORD,
    TERMINAL_CHANNEL_ID,
    USAGE,
    CommandHandler,
    Reply,
    Request,
    UpdateFollower,
    Upload,
)
from bot.jobs import JobState, JobStatus
from bot.queue import JobQueue
from bot.settings import Settings, SettingsError
from bot.storage import BotStore, emoji_number

log = logging.getLogger(__name__)

# View Channel 1<<10, Send Messages 1<<11, Attach Files 1<<15, Read Message History 1<<16, Add Reactions 1<<6
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, attach_files=True, read_message_history=True, add_reactions=True
)
MESSAGE_LIMIT = 2000  # characters in one Discord message
REPLAY_HISTORY = 100  # messages looked through for a result posted before a restart
SYNC_META = "app_commands_hash"


def intents() -> discord.Intents:
    chosen = discord.Intents.default()  # guilds, guild messages, reactions (raw events), DMs
    chosen.message_content = True  # `!continue C4 E4`: privileged, enable it in the developer portal
    chosen.presences = chosen.members = False
    return chosen


BUTTON_ID = r"melodybot:(?P<action>extend|again):(?P<job>[a-z0-9]+)"


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=BUTTON_ID):
    """"Extend the leader" / "Again" under a result. The job id lives in the custom_id, so the
    buttons keep working after a restart (registered in setup_hook, the view has no timeout)."""

    LABELS = {"extend": ("Extend the leader", "\u23e9"), "again": ("Again", "\U0001f3b2")}

    def __init__(self, action: str, job_id: str):
        label, emoji = self.LABELS[action]
        super().__init__(discord.ui.Button(
            label=label, emoji=emoji, style=discord.ButtonStyle.secondary, custom_id=f"melodybot:{action}:{job_id}"
        ))
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match, /) -> JobButton:
        return cls(match["action"], match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: MelodyBot = interaction.client  # type: ignore[assignment]
        await bot.answer_interaction(interaction, self.action, self.job_id)


def result_view(reply: Reply) -> discord.ui.View | None:
    if not reply.buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in reply.buttons:
        view.add_item(JobButton(button.action, button.job_id))
    return view


def discord_files(reply: Reply) -> list[discord.File]:
    return [discord.File(io.BytesIO(f.data), filename=f.name) for f in reply.files]


def upload_of(attachment: discord.Attachment) -> Upload:
    return Upload(attachment.filename, attachment.size, attachment.read)


class MelodyCog(commands.Cog, name="melodybot"):
    """Thin commands: each builds the argument text and hands it to the CommandHandler."""

    def __init__(self, bot: MelodyBot):
        self.bot = bot

    @commands.hybrid_command(name="continue", aliases=["cont"],
                             description="Continue a melody: type notes or attach a MIDI sketch")
    @app_commands.describe(
        notes="Notes and options, e.g. C4 E4 G4 A4 bars=8 temp=1.1 sound=guitar",
        sketch="A .mid sketch to continue (instead of typed notes)",
    )
    async def continue_(self, ctx: commands.Context, sketch: discord.Attachment | None = None, *, notes: str = ""):
        uploads = [sketch] if ctx.interaction and sketch else list(ctx.message.attachments if ctx.message else [])
        await self.bot.answer(ctx, "continue", notes, [upload_of(a) for a in uploads])

    @commands.hybrid_command(name="extend", description="Continue one variation of a finished job by more bars")
    @app_commands.describe(job="Job id (default: the newest result here)",
                           variation="Variation number (default: the vote leader)",
                           options="Options, e.g. bars=8 temp=1.1")
    async def extend(self, ctx: commands.Context, job: str = "", variation: int | None = None, *, options: str = ""):
        await self.bot.answer(ctx, "extend", " ".join(filter(None, [job, str(variation or ""), options])))

    @commands.hybrid_command(name="again", aliases=["reroll"], description="Same melody and settings, a new seed")
    @app_commands.describe(job="Job id (default: the newest result here)", options="Options to change, e.g. temp=1.3")
    async def again(self, ctx: commands.Context, job: str = "", *, options: str = ""):
        await self.bot.answer(ctx, "again", f"{job} {options}")

    @commands.hybrid_command(name="votes", description="The vote tally of a job")
    @app_commands.describe(job="Job id (default: the newest result here)")
    async def votes(self, ctx: commands.Context, job: str = ""):
        await self.bot.answer(ctx, "votes", job)

    @commands.command(name="vote", hidden=True)
    async def vote(self, ctx: commands.Context, *, args: str = ""):
        await self.bot.answer(ctx, "vote", args)

    @commands.hybrid_command(name="queue", aliases=["jobs"], description="Your jobs waiting or running")
    async def queue(self, ctx: commands.Context):
        await self.bot.answer(ctx, "queue", "")

    @commands.hybrid_command(name="cancel", description="Cancel one of your jobs")
    @app_commands.describe(job="Job id")
    async def cancel(self, ctx: commands.Context, job: str = ""):
        await self.bot.answer(ctx, "cancel", job)

    @commands.hybrid_command(name="channel", description="Switch melodybot on or off in this channel (Manage Channels)")
    @app_commands.describe(state="on or off")
    @app_commands.choices(state=[app_commands.Choice(name=word, value=word) for word in ("on", "off")])
    async def channel(self, ctx: commands.Context, state: str = ""):
        await self.bot.answer(ctx, "channel", state)

    @commands.hybrid_command(name="help", description="How to use melodybot, with examples")
    async def help(self, ctx: commands.Context):
        await self.bot.answer(ctx, "help", "")

    # Raw events: they fire for every message, also those sent before a restart (not in the cache).
    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.bot.reaction(payload, added=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self.bot.reaction(payload, added=False)


class JamCog(commands.Cog, name="melodybot jam"):
    """The jam commands (bot/commands/jam.py): `/jam`, `/song`, `!forget me`."""

    def __init__(self, bot: MelodyBot):
        self.bot = bot

    @commands.hybrid_command(name="jam", description="Write a song together: timed vote rounds (or: stop, status)")
    @app_commands.describe(
        notes="Notes and options, e.g. C4 E4 G4 A4 rounds=4 bars=4 minutes=2; or: stop, status",
        sketch="A .mid sketch to start from (instead of typed notes)",
    )
    async def jam(self, ctx: commands.Context, sketch: discord.Attachment | None = None, *, notes: str = ""):
        uploads = [sketch] if ctx.interaction and sketch else list(ctx.message.attachments if ctx.message else [])
        await self.bot.answer(ctx, "jam", notes, [upload_of(a) for a in uploads])

    @commands.hybrid_command(name="song", description="The whole song of a jam or of a chain of extends")
    @app_commands.describe(job="Job or jam id (default: the newest here)", variation="Variation of that job")
    async def song(self, ctx: commands.Context, job: str = "", variation: int | None = None):
        await self.bot.answer(ctx, "song", " ".join(filter(None, [job, str(variation or "")])))

    @commands.command(name="forget")
    async def forget(self, ctx: commands.Context, *, args: str = ""):
        await self.bot.answer(ctx, "forget", args)


class MelodyBot(commands.Bot):
    def __init__(self, settings: Settings, queue: JobQueue, store: BotStore, *, sync_commands: bool = True,
                 observe=None, **options):
        """sync_commands: upload the slash commands when they changed (off in tests); observe: a
        callback that sees every job update (metrics)."""
        super().__init__(
            command_prefix=commands.when_mentioned_or(settings.command_prefix),
            intents=options.pop("intents", intents()),
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.settings = settings
        self.queue = queue
        self.store = store
        self.handler = CommandHandler(settings, queue, store, platform=DISCORD)
        # Jobs of a terminal session on the same database are not Discord's to answer.
        self.follower = UpdateFollower(queue, self.deliver, accept=lambda s: s.job.channel_id != TERMINAL_CHANNEL_ID,
                                       observe=observe, on_failure=self._delivery_failed)
        self.handler.jams.post = self._post  # jams post round results and the song (bot/commands/jam_service.py)
        self.handler.jams.accept = lambda channel_id: channel_id != TERMINAL_CHANNEL_ID
        self.sync_commands = sync_commands
        self._status_where: dict[str, tuple[int, int]] = {}  # job id -> (channel id, message id)
        self._vote_locks: dict[tuple[int, int], tuple[asyncio.Lock, int]] = {}  # (message, user) -> lock, users
        self._status_text: dict[str, str] = {}  # newest status text per job, for a message not yet sent

    async def setup_hook(self) -> None:
        await self.add_cog(MelodyCog(self))
        await self.add_cog(JamCog(self))
        self.add_dynamic_items(JobButton)
        self.follower.start()
        self.handler.jams.start()
        if self.sync_commands:
            await self._sync_app_commands()

    async def close(self) -> None:
        await self.handler.jams.stop()
        await self.follower.stop()
        await super().close()

    async def _sync_app_commands(self) -> None:
        """Upload the slash commands only when they changed: syncing is rate limited."""
        payload = json.dumps([c.to_dict(self.tree) for c in self.tree.get_commands()], sort_keys=True, default=str)
        digest = hashlib.sha256(payload.encode()).hexdigest()
        if await self.store.channels.get_meta(SYNC_META) == digest:
            return
        try:
            synced = await self.tree.sync()
        except discord.HTTPException:
            log.exception("syncing the slash commands failed; the ! commands still work")
            return
        await self.store.channels.set_meta(SYNC_META, digest)
        log.info("synced %d slash commands", len(synced))

    # -- commands -------------------------------------------------------------------------------
    def _request(self, ctx: commands.Context, uploads: list[Upload]) -> Request:
        author = ctx.author
        return Request(
            user_id=author.id,
            channel_id=ctx.channel.id,
            user_name=getattr(author, "display_name", author.name),
            uploads=uploads,
            can_manage_channel=ctx.guild is not None and ctx.permissions.manage_channels,
            in_guild=ctx.guild is not None,
            guild_id=ctx.guild.id if ctx.guild is not None else None,
            interactive=ctx.interaction is not None,
        )

    async def answer(self, ctx: commands.Context, command: str, args: str, uploads: list[Upload] = ()) -> None:
        request = self._request(ctx, list(uploads))
        if ctx.interaction is None:
            args = self._raw_args(ctx, args)
        refused = await self.handler.gate(request, command)
        if refused is not None:  # switched off here, or too many commands: privately, or not at all
            for reply in refused:
                await self._send(ctx.send, reply)
            return
        if ctx.interaction is not None:
            await ctx.defer()  # downloads and queue calls can pass Discord's 3 s limit
        for reply in await self.handler.execute(request, command, args):
            await self._send(ctx.send, reply)

    @staticmethod
    def _raw_args(ctx: commands.Context, parsed: str) -> str:
        """The text after `!command` as typed: discord.py's own splitting of the first arguments
        drops quotes, and the handler parses the whole line itself."""
        rest = ctx.message.content[len(ctx.prefix or ""):].lstrip()
        name, *args = rest.split(maxsplit=1)
        return args[0].strip() if args and name.lower() == (ctx.invoked_with or "").lower() else parsed

    async def answer_interaction(self, interaction: discord.Interaction, command: str, args: str) -> None:
        """A button click: the same command as typed by whoever clicked."""
        request = Request(
            user_id=interaction.user.id,
            channel_id=interaction.channel_id,
            user_name=interaction.user.display_name,
            can_manage_channel=interaction.permissions.manage_channels,
            in_guild=interaction.guild_id is not None,
            guild_id=interaction.guild_id,
            interactive=True,
        )
        refused = await self.handler.gate(request, command)
        if refused is not None:  # an interactive request always gets its refusal, privately
            await interaction.response.send_message(refused[0].text, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        for reply in await self.handler.execute(request, command, args):
            await self._send(lambda **kw: interaction.followup.send(wait=True, **kw), reply)

    async def _send(self, send, reply: Reply) -> discord.Message:
        kwargs = {"content": reply.text[:MESSAGE_LIMIT]}
        if reply.files:
            kwargs["files"] = discord_files(reply)
        view = result_view(reply)
        if view is not None:
            kwargs["view"] = view
        if reply.private:
            kwargs["ephemeral"] = True
        message = await send(**kwargs)
        if reply.status_of and message is not None:
            await self._remember_status(reply.status_of, message.channel.id, message.id, reply.text)
        return message

    async def on_command_error(self, ctx: commands.Context, error: commands.CommandError) -> None:
        if isinstance(error, commands.CommandNotFound):
            return  # another bot's command, or a typo: stay quiet in shared channels
        if isinstance(error, commands.UserInputError) and ctx.command is not None:
            usage = USAGE.get(ctx.command.name, "").format(p=self.settings.command_prefix)
            await ctx.send(f"I couldn't read that: {error}. Usage: {usage}")
            return
        original = getattr(error, "original", error)
        log.error("command %s from user %s failed", ctx.command, ctx.author.id, exc_info=original)
        await ctx.send("Sorry, something went wrong on my side; the details are in the bot's log.")

    # -- votes ----------------------------------------------------------------------------------
    async def reaction(self, payload: discord.RawReactionActionEvent, added: bool) -> None:
        if self.user is not None and payload.user_id == self.user.id:
            return  # the bot's own 1..N reactions
        if payload.member is not None and payload.member.bot:
            return
        number = emoji_number(str(payload.emoji))
        if number is None:
            return
        # Each gateway event runs in its own task: without this, a quick add-then-remove by one
        # user could be applied remove-then-add. asyncio.Lock wakes waiters in arrival order.
        key = (payload.message_id, payload.user_id)
        lock, users = self._vote_locks.get(key, (asyncio.Lock(), 0))
        self._vote_locks[key] = (lock, users + 1)
        try:
            async with lock:
                await self._apply_reaction(payload, number, added)
        finally:
            lock, users = self._vote_locks[key]
            if users == 1:
                del self._vote_locks[key]
            else:
                self._vote_locks[key] = (lock, users - 1)

    async def _apply_reaction(self, payload: discord.RawReactionActionEvent, number: int, added: bool) -> None:
        shown = await self.store.messages.result_message(payload.message_id)
        if shown is None or number > shown.variations:
            return
        if added:
            await self.store.votes.vote(shown.job_id, payload.user_id, number)
        else:
            await self.store.votes.unvote(shown.job_id, payload.user_id, number)
        log.info("job %s: user %s %s variation %d", shown.job_id, payload.user_id,
                 "voted for" if added else "took back the vote for", number)

    # -- job updates ----------------------------------------------------------------------------
    async def _remember_status(self, job_id: str, channel_id: int, message_id: int, sent: str) -> None:
        self._status_where[job_id] = (channel_id, message_id)
        await self.store.messages.remember_status(job_id, channel_id, message_id)
        newest = self._status_text.pop(job_id, None)  # from now on updates edit the message directly
        if newest is not None and newest != sent:  # the job moved on while the reply was being sent
            await self._edit(channel_id, message_id, newest)

    async def _show_status(self, status: JobStatus) -> bool:
        """Edit the job's status message; False if it has none (yet)."""
        job_id = status.job.job_id
        text = self.handler.status_text(status)
        self._status_text[job_id] = text
        where = self._status_where.get(job_id) or await self.store.messages.status_message(job_id)
        if where is None:
            return False
        await self._edit(*where, text)
        return True

    async def _edit(self, channel_id: int, message_id: int, text: str) -> None:
        try:
            await self.get_partial_messageable(channel_id).get_partial_message(message_id).edit(content=text)
        except discord.HTTPException as error:  # deleted, or no access any more: the result still comes
            log.warning("editing status message %s failed: %s", message_id, error)

    async def deliver(self, status: JobStatus) -> None:
        job = status.job
        shown = await self._show_status(status)
        posted = None
        if status.state == JobState.DONE and status.result is not None:
            posted = await self._post_result(status)
        elif status.state.finished and (not shown or status.state == JobState.FAILED):
            await self._post(job.channel_id, Reply(self.handler.status_text(status)))
        if status.state.finished:  # answered: never emitted again, even if the reactions below fail
            await self.queue.mark_delivered(job.job_id)
            await self.store.messages.forget_status(job.job_id)
            self._status_where.pop(job.job_id, None)
            if shown:  # else kept for the status message still being sent (see _remember_status)
                self._status_text.pop(job.job_id, None)
        if posted is not None:
            await self._add_vote_reactions(job.job_id, *posted)

    async def _delivery_failed(self, status: JobStatus, error: BaseException) -> None:
        """A result that could not be posted (logged already): tell the channel, if it can be told."""
        job_id = status.job.job_id
        text = (f"Sorry, I couldn't post the result of job {job_id} ({type(error).__name__}), even after trying "
                f"for a while; it will be tried again when I restart, or try "
                f"`{self.settings.command_prefix}again {job_id}`.")
        await self._post(status.job.channel_id, Reply(text))

    async def _channel(self, channel_id: int):
        return self.get_channel(channel_id) or await self.fetch_channel(channel_id)

    async def _post(self, channel_id: int, reply: Reply) -> discord.Message | None:
        try:
            channel = await self._channel(channel_id)
            return await self._send(channel.send, reply)
        except (discord.Forbidden, discord.NotFound) as error:  # gone or closed to us: retrying won't help
            log.warning("cannot post to channel %s: %s", channel_id, error)
            return None

    async def _post_result(self, status: JobStatus) -> tuple[discord.Message, list[str]] | None:
        """Post the result message and remember it for votes; (message, reactions to add), or None
        when the channel is gone or closed to the bot."""
        job = status.job
        try:
            channel = await self._channel(job.channel_id)
            limit = channel.guild.filesize_limit if getattr(channel, "guild", None) else 10 * 1024 * 1024
            reply = self.handler.result_reply(status, upload_limit=limit)
            message = await self._posted_before(channel, job) if status.replayed else None
            if message is not None:
                log.info("job %s: its result was posted before (message %s); not posting it again", job.job_id,
                         message.id)  # fmt: skip
            else:
                message = await self._send(channel.send, reply)
        except (discord.Forbidden, discord.NotFound) as error:  # marked delivered: retrying cannot help
            log.warning("job %s: cannot post the result in channel %s: %s", job.job_id, job.channel_id, error)
            return None
        await self.store.messages.remember_result(message.id, job.job_id, channel.id, len(status.result.variations))
        log.info("job %s: result posted as message %s (%s)", job.job_id, message.id,
                 ", ".join(f"{k} {v:.2f} s" for k, v in status.result.timings.items()))
        return message, reply.reactions

    async def _posted_before(self, channel, job) -> discord.Message | None:
        """The result message of `job` if this bot already posted it: a delivery replayed after a
        restart (killed between posting and recording) must not post it twice."""
        known = await self.store.messages.result_of_job(job.job_id)
        if known is not None:
            try:
                return await channel.fetch_message(known.message_id)
            except discord.HTTPException:
                return None
        made = datetime.datetime.fromtimestamp(job.created_at, datetime.UTC)
        async for message in channel.history(limit=REPLAY_HISTORY):
            if message.created_at < made:
                continue
            ours = message.author == self.user
            if ours and any(a.filename.startswith(f"{job.job_id}-") for a in message.attachments):  # job-1.mid
                return message
        return None

    async def _add_vote_reactions(self, job_id: str, message: discord.Message, reactions: list[str]) -> None:
        for emoji in reactions:  # ~0.25 s each: Discord rate-limits reactions per channel
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException as error:
                log.warning("job %s: adding the vote reactions failed: %s", job_id, error)
                return


async def run_discord(settings: Settings, queue: JobQueue, store: BotStore, observe=None) -> None:
    """Log in and serve until SIGTERM or Ctrl-C. A token or intent Discord refuses raises
    SettingsError with what to change."""
    async with MelodyBot(settings, queue, store, observe=observe) as bot:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(bot.close()))
        except (NotImplementedError, RuntimeError):  # not on Windows, not outside the main thread
            pass
        try:
            await bot.start(settings.discord_token)
        except discord.LoginFailure:
            raise SettingsError("Discord refused the token (DISCORD_TOKEN): copy it again from the developer "
                                "portal, Bot tab, Reset Token") from None
        except discord.PrivilegedIntentsRequired:
            raise SettingsError("switch on the Message Content intent for this bot in the developer portal "
                                "(Bot tab, Privileged Gateway Intents); !commands need it") from None

"""``HistoryService``: what the conversation routes do, over the store and the reply manager.

Blocking store calls run in worker threads; replies run as background tasks (``ReplyManager``)
whose events any number of streams can follow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

import anyio
from pydantic import ValidationError
from redis import RedisError
from sse_starlette import ServerSentEvent

from r1serve.api import tools
from r1serve.api.access import AccessWatch, revocable
from r1serve.api.conversation_schemas import (
    ConversationCreate,
    ConversationPatch,
    MessageEdit,
    MessagePost,
    ToolResultsPost,
)
from r1serve.api.reply_bus import ReplyBus
from r1serve.api.reply_relay import RelayedReply
from r1serve.api.served import ModelServices
from r1serve.api.service import CompletionService
from r1serve.api.tool_schemas import ToolOptions
from r1serve.auth import Principal
from r1serve.conversations import (
    ConversationChanges,
    ConversationDetail,
    ConversationDraft,
    ConversationRecord,
    ConversationStore,
    ConversationTransfer,
    MessageRecord,
    ReplyContext,
    ReplyPlan,
    ReplyResult,
    ReplySettings,
    ReplyStart,
    ToolResultDraft,
    build_history_prompt,
    decode_cursor,
    encode_cursor,
    new_id,
)
from r1serve.conversations.continuing import (
    context_for_continue,
    continued_prompt,
    resume_reply,
)
from r1serve.conversations.defaults import ReplyDefaultsStore, merged, page_reply_cap
from r1serve.conversations.prompting import current_turn
from r1serve.conversations.replies import ReplyManager
from r1serve.conversations.reply_events import (
    ChunkFormat,
    ReplyEvent,
    chunk_format,
    final_events,
    parse_last_event_id,
    sse,
    start_event,
    stored_events,
)
from r1serve.conversations.transfer import export_json, export_markdown
from r1serve.engine.protocol import SamplingParams
from r1serve.errors import R1ServeError, RequestError
from r1serve.generation import Meter, SamplingRequest
from r1serve.generation.reasoning import skip_reasoning
from r1serve.storage import Database

log = logging.getLogger("r1serve.api")
ExportFormat = Literal["json", "markdown"]
Events = AsyncIterator[ServerSentEvent]
STOP_WAIT_S = 15.0  # how long a Stop waits for another server to end its reply
DELETE_STOP_WAIT_S = 3.0  # a delete goes on after this (the writer sees the row gone)
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")


def tool_options(settings: Mapping[str, Any]) -> ToolOptions:
    """A conversation's tools, checked like a chat request's; 400 that says what is wrong."""
    fields = {name: settings[name] for name in TOOL_FIELDS if settings.get(name) is not None}
    try:
        return ToolOptions.model_validate(fields, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise RequestError(
            f"settings{'.' + where if where else ''}: {message}", param="settings"
        ) from None


class HistoryService:
    """Conversations of the calling user: CRUD, replies, reattaching, export and import.

    A conversation remembers its model; its replies run on that model while the server serves
    it, on the default model otherwise (a conversation outlives the server's models file).
    """

    def __init__(
        self,
        store: ConversationStore,
        transfer: ConversationTransfer,
        replies: ReplyManager,
        services: ModelServices,
        *,
        access: AccessWatch | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.access = access
        self.store = store
        self.transfer = transfer
        self.replies = replies
        self.services = services
        self.poll_s = poll_s
        self.defaults = ReplyDefaultsStore(store.database)

    @property
    def completions(self) -> CompletionService:
        """The default model's service."""
        return self.services.default

    @classmethod
    def over(
        cls,
        database: Database,
        services: ModelServices,
        access: AccessWatch | None = None,
        bus: ReplyBus | None = None,
    ) -> HistoryService:
        """The service over a database, with the default reply manager (``bus``: replicas)."""
        store = ConversationStore(database)
        transfer, replies = ConversationTransfer(database), ReplyManager(store, bus=bus)
        return cls(store, transfer, replies, services, access=access)

    def _chosen(self, caller: Principal, model: str | None) -> str:
        """The served model a create or update names (None: the default), in the caller's scope."""
        name = self.services.get(model).engine.model_name
        caller.require_model(name)
        return name

    def _service(self, caller: Principal, model: str | None) -> CompletionService:
        """The service a conversation's replies run on, in the caller's scope."""
        service = self.services.get(model if model in self.services.models else None)
        caller.require_model(service.engine.model_name)
        return service

    async def start(self) -> None:
        """Mark replies a dead server left as incomplete; start sweeping."""
        await self.replies.start()

    async def close(self) -> None:
        """Stop running replies (saved as incomplete)."""
        await self.replies.close()

    # ---- conversations (blocking: sync routes) ------------------------------------------

    def create(self, caller: Principal, body: ConversationCreate) -> ConversationRecord:
        """A new conversation of the caller."""
        draft = ConversationDraft(
            title=body.title,
            system_prompt=body.system_prompt,
            model=self._chosen(caller, body.model),
            settings=body.settings.stored(),
        )
        tool_options(draft.settings)
        return self.store.create(caller.user_id, draft)

    def page(
        self, caller: Principal, *, limit: int, before: str | None, query: str | None
    ) -> tuple[list[ConversationRecord], str | None]:
        """A page of the caller's conversations and the token of the next one."""
        cursor = None if before is None else decode_cursor(before)
        text = (query or "").strip() or None
        records, following = self.store.page(caller.user_id, limit=limit, before=cursor, text=text)
        return records, None if following is None else encode_cursor(following)

    def detail(self, caller: Principal, conversation_id: str) -> ConversationDetail:
        """A conversation with its current branch."""
        return self.store.detail(caller.user_id, conversation_id)

    def update(
        self, caller: Principal, conversation_id: str, body: ConversationPatch
    ) -> ConversationRecord:
        """Rename, change the system prompt or settings, or switch branches."""
        fields = body.model_fields_set
        changes: ConversationChanges = {}
        if "title" in fields:
            changes["title"] = body.title or ""
        if "system_prompt" in fields:
            changes["system_prompt"] = body.system_prompt or ""
        if "model" in fields:
            model = body.model
            changes["model"] = None if model is None else self._chosen(caller, model)
        if "settings" in fields:
            changes["settings"] = body.settings.stored() if body.settings else {}
            tool_options(changes["settings"])
        if "current_leaf_id" in fields:
            changes["current_leaf_id"] = body.current_leaf_id
        return self.store.update(caller.user_id, conversation_id, changes)

    async def delete(self, caller: Principal, conversation_id: str) -> None:
        """Delete a conversation; a reply being written for it (here or, with Redis, on another
        replica) is stopped first."""
        found = await anyio.to_thread.run_sync(self.store.get, caller.user_id, conversation_id)
        reply = self.replies.in_conversation(conversation_id)
        if reply is not None:
            await reply.stop("stopped")
        elif found.active_message_id is not None and self.replies.bus is not None:
            message_id = found.active_message_id
            await self._stop_elsewhere(caller, conversation_id, message_id, DELETE_STOP_WAIT_S)
        await anyio.to_thread.run_sync(self.store.delete, caller.user_id, conversation_id)

    def export(
        self, caller: Principal, conversation_id: str | None, fmt: ExportFormat
    ) -> tuple[str, str, str]:
        """(body, media type, file name) of an export of one conversation or all."""
        export = self.transfer.export(caller.user_id, conversation_id)
        name = f"conversation-{conversation_id}" if conversation_id else "conversations"
        if fmt == "markdown":
            return export_markdown(export), "text/markdown; charset=utf-8", f"{name}.md"
        return export_json(export), "application/json", f"{name}.json"

    def import_json(self, caller: Principal, data: bytes) -> list[str]:
        """Add the conversations of a JSON export; their new ids."""
        return self.transfer.import_json(caller.user_id, data)

    # ---- replies ------------------------------------------------------------------------

    async def post_message(
        self,
        caller: Principal,
        conversation_id: str,
        body: MessagePost,
        *,
        meter: Meter | None = None,
    ) -> Events:
        """Store a user message and stream its reply."""
        context = await anyio.to_thread.run_sync(
            lambda: self.store.context_for_message(
                caller.user_id,
                conversation_id,
                body.parent_id,
                default_parent="parent_id" not in body.model_fields_set,
            )
        )
        return await self._reply(caller, context, body.content, new_question=True, meter=meter)

    async def regenerate(
        self,
        caller: Principal,
        conversation_id: str,
        message_id: str,
        *,
        meter: Meter | None = None,
    ) -> Events:
        """A new reply beside assistant message ``message_id``."""
        context = await anyio.to_thread.run_sync(
            self.store.context_for_regenerate, caller.user_id, conversation_id, message_id
        )
        assert context.reply_to is not None
        return await self._reply(
            caller, context, context.reply_to.content, new_question=False, meter=meter
        )

    async def tool_results(
        self,
        caller: Principal,
        conversation_id: str,
        message_id: str,
        body: ToolResultsPost,
        *,
        meter: Meter | None = None,
    ) -> Events:
        """Store the results of reply ``message_id``'s tool calls, and stream the next reply."""
        call_ids = [result.tool_call_id for result in body.results]
        context = await anyio.to_thread.run_sync(
            self.store.context_for_tool_results,
            caller.user_id,
            conversation_id,
            message_id,
            call_ids,
        )
        drafts = tuple(ToolResultDraft(new_id(), r.tool_call_id, r.content) for r in body.results)
        return await self._reply(
            caller, context, "", new_question=False, tool_results=drafts, meter=meter
        )

    async def edit(
        self,
        caller: Principal,
        conversation_id: str,
        message_id: str,
        body: MessageEdit,
        *,
        meter: Meter | None = None,
    ) -> Events:
        """A new version of user message ``message_id`` beside it, and its reply."""
        context = await anyio.to_thread.run_sync(
            self.store.context_for_edit, caller.user_id, conversation_id, message_id
        )
        return await self._reply(caller, context, body.content, new_question=True, meter=meter)

    async def continue_reply(
        self,
        caller: Principal,
        conversation_id: str,
        message_id: str,
        *,
        meter: Meter | None = None,
    ) -> Events:
        """Continue reply ``message_id``, cut at max_tokens, in the same message."""
        found = await anyio.to_thread.run_sync(
            context_for_continue, self.store, caller.user_id, conversation_id, message_id
        )
        context, partial = found.context, found.partial
        assert context.reply_to is not None
        conversation = context.conversation
        settings = merged(conversation.settings, {})
        offered = tool_options(conversation.settings)
        service = self._service(caller, conversation.model)
        engine = service.engine
        older, turn = current_turn(context.history, [context.reply_to.chat_entry()])
        built = await anyio.to_thread.run_sync(
            lambda: build_history_prompt(
                engine,
                system_prompt=conversation.system_prompt,
                history=older,
                question=turn,
                max_tokens=settings.max_tokens,
                tools=tools.offered_tools(offered),
            )
        )
        prompt = continued_prompt(built.prompt, partial, engine.tokenizer)
        room = engine.context_length - len(prompt.token_ids)
        if room < 1:
            raise RequestError("the reply already fills the context; it cannot go on")
        params = self._sampling(service, settings, min(built.max_tokens, room))
        started = await anyio.to_thread.run_sync(
            resume_reply,
            self.store,
            caller.user_id,
            conversation.id,
            message_id,
            self.replies.worker,
        )
        fmt = chunk_format(started.assistant_message, engine.model_name)
        try:
            outputs = await service.start(
                f"conv-{message_id}-{new_id()[:8]}",
                [prompt],
                params,
                # Past the thinking, the new text is answer verbatim (its leading space kept).
                split_reasoning=prompt.opens_reasoning,
                repetition_guard=settings.repetition_guard is not False,
                meter=meter,
            )
        except R1ServeError as exc:
            return await self._not_started(started, exc, fmt)
        setup = tools.tool_setup(offered, prompt)
        if setup is not None:
            outputs = tools.with_tool_calls(outputs, setup, 1)
        reply = self.replies.launch(started, outputs, resumed=partial)
        return sse(reply.subscribe(), None, fmt)

    async def _reply(
        self,
        caller: Principal,
        context: ReplyContext,
        question: str,
        *,
        new_question: bool,
        tool_results: tuple[ToolResultDraft, ...] = (),
        meter: Meter | None = None,
    ) -> Events:
        conversation = context.conversation
        # The conversation's settings over the user's defaults; no cap set: the page's cap.
        user_defaults = await anyio.to_thread.run_sync(self.defaults.get, caller.user_id)
        settings = merged(conversation.settings, user_defaults)
        offered = tool_options(conversation.settings)
        service = self._service(caller, conversation.model)
        engine = service.engine
        asked = _asked(context, question, new_question, tool_results)
        older, turn = current_turn(context.history, asked)
        # Old turns may be dropped to fit; the system prompt and the current turn never are.
        built = await service.prompts.prepare(
            len(conversation.system_prompt) + sum(len(entry["content"] or "") for entry in asked),
            lambda: build_history_prompt(
                engine,
                system_prompt=conversation.system_prompt,
                history=older,
                question=turn,
                max_tokens=settings.max_tokens,
                tools=tools.offered_tools(offered),
            ),
            param="content",
        )
        prompt, max_tokens = built.prompt, built.max_tokens
        if settings.max_tokens is None:
            max_tokens = min(max_tokens, page_reply_cap(engine.model_name))
        if settings.reasoning_effort == "none":
            prompt = skip_reasoning(prompt, engine.tokenizer)
            max_tokens = min(max_tokens, engine.context_length - len(prompt.token_ids))
        params = self._sampling(service, settings, max_tokens)
        params = replace(params, constraint=tools.tool_constraint(offered, prompt))
        plan = ReplyPlan(
            assistant_message_id=new_id(),
            model=engine.model_name,
            prompt_tokens=len(prompt.token_ids),
            dropped_turns=built.dropped_turns,
            worker=self.replies.worker,
            parent_id=context.parent_id,
            user_message_id=new_id() if new_question else None,
            user_content=question if new_question else None,
            reply_to=None if new_question or context.reply_to is None else context.reply_to.id,
            tool_results=tool_results,
        )
        started = await anyio.to_thread.run_sync(
            self.store.begin_reply, caller.user_id, conversation.id, plan
        )
        fmt = chunk_format(started.assistant_message, engine.model_name)
        try:
            # The route's meter: quotas were checked, and the reply's usage is recorded.
            outputs = await service.start(
                f"conv-{plan.assistant_message_id}",
                [prompt],
                params,
                repetition_guard=settings.repetition_guard is not False,  # None: on
                meter=meter,
            )
        except R1ServeError as exc:
            return await self._not_started(started, exc, fmt)
        setup = tools.tool_setup(offered, prompt)
        if setup is not None:  # calls are parsed out of the answer as on /v1/chat/completions
            outputs = tools.with_tool_calls(outputs, setup, 1)
        reply = self.replies.launch(started, outputs)
        return sse(reply.subscribe(), None, fmt)

    def _sampling(
        self, service: CompletionService, settings: ReplySettings, max_tokens: int
    ) -> SamplingParams:
        asked = SamplingRequest(
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            min_p=settings.min_p,
            repetition_penalty=settings.repetition_penalty,
            seed=settings.seed,
            max_tokens=max_tokens,
            ignore_eos=bool(settings.ignore_eos),
            max_reasoning_tokens=settings.max_reasoning_tokens,
            reasoning_effort=settings.reasoning_effort,
        )
        return service.sampling(asked)

    async def _not_started(
        self, started: ReplyStart, error: R1ServeError, fmt: ChunkFormat
    ) -> Events:
        """The engine refused the reply (e.g. overloaded): it is stored as failed."""
        result = ReplyResult("", "", 0, "error", None, error.message, None)
        message = await anyio.to_thread.run_sync(
            self.store.finish_reply, started.assistant_message.id, result
        )
        events = [
            start_event(
                started.conversation.id,
                started.user_message,
                started.assistant_message,
                started.assistant_message.dropped_turns,
            ),
            *final_events(0, message, error),
        ]
        return sse(_iterate(events), None, fmt)

    async def stream(
        self, caller: Principal, conversation_id: str, message_id: str, last_event_id: str | None
    ) -> Events:
        """A reply's events after ``last_event_id``: live if running here, else from storage."""
        after = parse_last_event_id(last_event_id)
        message = await self._message(caller, conversation_id, message_id)
        if message.role != "assistant" or message.parent_id is None:
            raise RequestError("only replies (assistant messages) have a stream")
        conversation = await anyio.to_thread.run_sync(
            self.store.get, caller.user_id, conversation_id
        )
        model = conversation.model if conversation.model in self.services.models else None
        fmt = chunk_format(message, self.services.get(model).engine.model_name)
        reply = self.replies.get(message_id)
        if reply is not None and reply.conversation_id == conversation_id:
            return sse(self._followed(caller, reply.subscribe()), after, fmt)
        question = await self._message(caller, conversation_id, message.parent_id)

        async def reload() -> MessageRecord:
            return await self._message(caller, conversation_id, message_id)

        bus = self.replies.bus
        if bus is not None and message.status == "generating":  # another replica writes it
            relayed = RelayedReply(bus, conversation_id, question, message, reload, self.poll_s)
            return sse(self._followed(caller, relayed.events()), after, fmt)
        events = stored_events(conversation_id, question, message, reload, self.poll_s)
        return sse(self._followed(caller, events), after, fmt)

    def _followed(
        self, caller: Principal, events: AsyncIterator[ReplyEvent]
    ) -> AsyncIterator[ReplyEvent]:
        """A follower's events, ending when the follower's own access does."""
        if self.access is None:
            return events
        return revocable(events, self.access.lease(caller))

    async def stop(self, caller: Principal, conversation_id: str, message_id: str) -> MessageRecord:
        """Stop a reply and return it as saved; a finished one is returned as it is."""
        message = await self._message(caller, conversation_id, message_id)
        reply = self.replies.get(message_id)
        if reply is not None and reply.conversation_id == conversation_id:
            return await reply.stop("stopped") or message
        if message.status != "generating":
            return message
        return await self._stop_elsewhere(caller, conversation_id, message_id)

    async def _stop_elsewhere(
        self, caller: Principal, conversation_id: str, message_id: str, wait_s: float = STOP_WAIT_S
    ) -> MessageRecord:
        """Stop a reply another server (or this one, a moment before the reply was registered)
        writes: at once through Redis when replicas share it, and through the database, which
        the writer reads at its next save; the reply as saved once it has ended (or after
        ``wait_s``)."""
        message = await anyio.to_thread.run_sync(
            self.store.request_stop, caller.user_id, conversation_id, message_id
        )
        bus = self.replies.bus
        if bus is not None:
            try:
                await bus.request_stop(message_id, "stopped")
            except RedisError as exc:  # the database flag still reaches the writer
                log.warning("publishing a Stop to Redis failed: %s", exc)
            if (local := self.replies.get(message_id)) is not None:  # registered meanwhile
                return await local.stop("stopped") or message
        deadline = time.monotonic() + wait_s
        poll_s = self.poll_s if bus is None else min(self.poll_s, 0.1)
        while message.status == "generating" and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
            message = await self._message(caller, conversation_id, message_id)
        return message

    async def _message(
        self, caller: Principal, conversation_id: str, message_id: str
    ) -> MessageRecord:
        return await anyio.to_thread.run_sync(
            self.store.message, caller.user_id, conversation_id, message_id
        )


def _asked(
    context: ReplyContext,
    question: str,
    new_question: bool,
    tool_results: tuple[ToolResultDraft, ...],
) -> list[dict[str, Any]]:
    """The chat entries a reply answers: new tool results, a new question, or the old one."""
    if tool_results:
        return [
            {"role": "tool", "tool_call_id": r.tool_call_id, "content": r.content}
            for r in tool_results
        ]
    if new_question or context.reply_to is None:
        return [{"role": "user", "content": question}]
    return [context.reply_to.chat_entry()]


async def _iterate(events: Iterable[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
    for event in events:
        yield event

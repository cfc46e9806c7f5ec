"""Terra's answer: one call of the agent, or the tool loop when the answer has tools.

:func:`reply` streams the answer's visible text into a :class:`~worker.ports.DeltaSink`
(the chunk writer) and returns the whole :class:`~worker.turns.AgentTurn`. It talks to the
model only through the :class:`~worker.ports.Agent` port (one streamed completion with its
retries, :class:`worker.llm.AgentClient` in production) and to the tools through a
:class:`~worker.ports.ToolHost`.

The tool loop (:func:`reply` with a tool host). Up to ``max_rounds``
streamed calls per answer; tool-call deltas are merged by ``index`` (only a call's first delta
carries its id and name). Each round's calls run through the host (the tool registry: per-call
timeouts, and bad JSON, unknown tools or invalid arguments come back to the model as a tool
error, never as an exception); the assistant ``tool_calls`` message (content ``""`` when
empty, never null) and one ``tool`` message per call are appended, and the answer's tool turns
so far are saved (``ToolHost.remember``) before the next call, so a restarted worker or the
next question sees them intact. Rules:

- Retries apply per round: a round is retried while *that round* has shown nothing yet; text
  of earlier rounds stays, as it is already part of the answer.
- Before the second-to-last call a note joined to the system prompt
  (:func:`worker.template_shapes.fold_system_note`, never a turn of its own: strict chat
  templates refuse one) warns the model that one round of tools is left (as terrarium-irc
  does); the last call is offered no tools, so the model answers.
  If it still asks for tools, the calls are not run and the answer ends with
  :data:`TOOL_ROUNDS_APOLOGY`.
- Textual tool calls: when a response has no structured ``tool_calls`` but its text (outside
  ``<think>`` blocks) contains a call of a known tool (``name(arg="v")`` or
  ``<tool_call>{...}</tool_call>``), the calls run as if made properly. So that the visitor
  does not see such text as the answer, content is *held back* from the point where a call of
  a known tool may start (a known name at a word start followed by ``(``, or ``<tool_call>``)
  until the round ends; a trailing word that may still become a tool name waits for the next
  delta. Held text that turns out not to be a call is released at the end of the round (the
  visitor sees it arrive at once); a call, and anything after it in that round, is never
  shown. Text before the call stays visible. No ``streamReset`` is needed for this.
- The answer is what the visitor saw: the visible text of every round, separated by a blank
  line, so the concatenated chunks always equal the stored reply. ``<think>`` blocks stay in
  the content (the original front end shows them in its thoughts drawer);
  ``reasoning_content`` deltas go to a separate :class:`ReasoningSink` (v=2 frames).
- Between rounds the host is asked whether the visitor cancelled (tool rounds show nothing,
  so the chunk writer cannot notice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import structlog
from openai.types.chat import ChatCompletionMessageParam

from worker.aio import cancel_and_wait
from worker.chunks import ChunkWriter, until_done_or_stopped
from worker.errors import AgentError
from worker.holdback import AnswerSink, without_think
from worker.ports import Agent, DeltaSink, ReasoningSink, ToolHost, ToolLog
from worker.template_shapes import fold_system_note
from worker.turns import AgentTurn

__all__ = ["ROUNDS_WARNING", "TOOL_ROUNDS_APOLOGY", "reply", "reply_until_stopped"]

logger = structlog.get_logger("worker.toolloop")

#: Turns whose text the model was handed by others (visitors, tools): a textual call of a
#: tool they name may be copied, so it is not run (tools.textual_calls).
_READ_ROLES = ("user", "tool")
#: Told to the model (as a system message) before its second-to-last call of a reply.
ROUNDS_WARNING = (
    "Tool budget warning: you may make at most one more round of tool calls for this reply; "
    "after that no tools are available and you must answer. If you already have enough, "
    "answer the visitor now with what you have."
)
#: Ends a reply when the model still asked for tools on its last call.
TOOL_ROUNDS_APOLOGY = (
    "I looked in more places than I can in one reply and still came up short, sorry. "
    "Could you ask me something a little narrower?"
)


async def reply(
    agent: Agent,
    messages: Sequence[ChatCompletionMessageParam],
    sink: DeltaSink,
    *,
    tools: ToolHost | None = None,
    thoughts: ReasoningSink | None = None,
    max_rounds: int = 8,
) -> AgentTurn:
    """Answer the conversation ``messages``, streaming content into ``sink``.

    With ``tools``, runs the tool loop (module doc); the returned turn's ``content`` is
    everything the visitor saw. Messages after the last user message are taken as tool
    turns saved by an earlier attempt at this answer (they count against ``max_rounds``).
    Raises :class:`AgentError` after the last failed attempt of a round.
    """
    if tools is None:
        turn = await agent.complete(messages, sink, thoughts=thoughts)
        if turn.tool_calls and not turn.content and not turn.stopped:
            raise AgentError("unknown", "the model asked for tools, but none are offered")
        return turn
    return await _tool_loop(agent, messages, sink, tools, thoughts, max_rounds)


async def reply_until_stopped(
    agent: Agent,
    messages: Sequence[ChatCompletionMessageParam],
    writer: ChunkWriter,
    log: ToolLog,
    chat_id: str,
    message_id: str,
    *,
    tools: ToolHost | None,
    thoughts: ReasoningSink | None,
    max_rounds: int,
    cancel_poll_ms: int,
    end_writer: bool = False,
) -> AgentTurn:
    """:func:`reply`, cut short as soon as the visitor asks to stop it.

    The chunk writer sees a stop request at its next write; while the agent sends
    nothing, a watcher polls the request every ``cancel_poll_ms``. Either way the agent
    call is cancelled and the text streamed so far is the (stopped) turn.
    ``end_writer``: a complete reply ends ``writer`` at once (:meth:`ChunkWriter.end`).
    """

    async def replied() -> AgentTurn:
        turn = await reply(
            agent, messages, writer, tools=tools, thoughts=thoughts, max_rounds=max_rounds
        )
        if end_writer and not turn.stopped:
            writer.end()  # before the flusher's next turn: its text may go with the FINISH
        return turn

    answer = asyncio.create_task(replied(), name="worker.reply")
    await until_done_or_stopped(log, chat_id, message_id, writer, answer, cancel_poll_ms)
    if not answer.done():  # the visitor asked to stop
        await cancel_and_wait([answer])
        if not answer.done() or answer.cancelled() or answer.exception() is not None:
            return AgentTurn(content=writer.text, stopped=True, deltas=writer.deltas)
    return answer.result()


async def _tool_loop(
    agent: Agent,
    messages: Sequence[ChatCompletionMessageParam],
    sink: DeltaSink,
    host: ToolHost,
    thoughts: ReasoningSink | None,
    max_rounds: int,
) -> AgentTurn:
    history: list[dict[str, Any]] = [dict(m) for m in messages]
    first_after = 1 + max((i for i, m in enumerate(history) if m.get("role") == "user"), default=-1)
    memory = [m for m in history[first_after:] if m.get("role") in ("assistant", "tool")]
    done = sum(1 for m in memory if m.get("role") == "assistant" and m.get("tool_calls"))
    names = frozenset(host.call_names)
    answer = AnswerSink(sink)
    total = AgentTurn()
    reasoning: list[str] = []
    while True:
        last = done + 1 >= max_rounds
        if done and await host.cancelled():
            total.stopped = True
            break
        if done and done + 2 == max_rounds:
            # joined to the system prompt: strict chat templates refuse a system turn here
            warned = fold_system_note(
                cast(list[ChatCompletionMessageParam], history), ROUNDS_WARNING
            )
            history = [dict(m) for m in warned]
        answer.new_round()
        turn = await agent.complete(
            cast(list[ChatCompletionMessageParam], history),
            answer,
            tools=None if last else host.definitions(),
            thoughts=thoughts,
            hold=names,
        )
        total.deltas += turn.deltas
        total.latency_ms += turn.latency_ms  # the model's time, not the tools'
        total.finish_reason = turn.finish_reason
        reasoning.append(turn.reasoning)
        if turn.stopped:
            total.stopped = True
            break
        calls = list(turn.tool_calls)
        said = turn.content
        if turn.held:
            read = [str(m.get("content") or "") for m in history if m.get("role") in _READ_ROLES]
            textual = host.textual_calls(without_think(turn.content), read)
            if textual:
                said = turn.content[: len(turn.content) - len(turn.held)]
                if not calls:
                    calls = textual
                    logger.info("worker.textual_tool_calls_found", tools=[c.name for c in calls])
            elif not answer.push(turn.held):
                total.stopped = True
                break
        if not calls:
            break
        if last:
            total.exhausted = True
            logger.warning("worker.tool_rounds_exhausted", rounds=done, asked=len(calls))
            answer.new_round()
            answer.push(TOOL_ROUNDS_APOLOGY)
            break
        assistant: dict[str, Any] = AgentTurn(content=said, tool_calls=calls).as_message()
        results = await host.run(calls)
        replies = [
            {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result}
            for call, result in zip(calls, results, strict=True)
        ]
        history += [assistant, *replies]
        memory += [{**assistant, "content": ""}, *replies]
        await host.remember(memory)
        done += 1
    total.content = answer.text
    total.reasoning = "".join(reasoning)
    total.rounds = done
    return total

"""Server-Sent Events on several Felix nodes sharing one Redis: a stream resumes anywhere."""

from __future__ import annotations

from tests.conftest import StartServer, create_workflow, publish
from tests.redis.conftest import RedisServer
from tests.redis.test_cluster import output, start_nodes
from tests.web.test_sse import open_sse, sse_path


async def test_an_event_stream_resumes_on_another_node_and_ends_with_its_204(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a:
        workflow_id = await create_workflow(on_a)
        await publish(on_a, workflow_id, [output(n) for n in range(5)])
        # A browser saw seq 3 on node A, then reconnects to node B.
        async with open_sse(b, sse_path(workflow_id), {"Last-Event-ID": "3"}) as stream:
            connected = await stream.next()
            assert connected is not None
            assert connected.json()["recovered"] is True
            await publish(on_a, workflow_id, {"type": "completed"})
            seen = await stream.until_end()
        assert [(m.event, m.id) for m in seen] == [
            ("agent_output", "4"),
            ("agent_output", "5"),
            ("completed", "6"),
            ("close", "6"),
        ]
        async with b.client() as on_b:
            response = await on_b.get(sse_path(workflow_id), headers={"Last-Event-ID": "6"})
        assert response.status_code == 204

"""The hub service: managed Mosquitto + ingest + HTTP API in one process."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub import firmware, protocol, registry
from hub.alerts import AlertEngine
from hub.api.app import create_app
from hub.broker import Mosquitto
from hub.channels.qr import QrChannel
from hub.config import Settings
from hub.db import make_engine
from hub.ingest import Ingestor, MqttIngest, Result
from hub.livefeed import LiveFeed
from hub.models import Terminal
from hub.reports.rollup import rollups_for
from hub.sync import SyncSender

log = logging.getLogger(__name__)


class HubService:
    def __init__(self, settings: Settings, *, on_result: Callable[[Result], None] | None = None):
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = make_engine(settings.db_url)
        if not settings.mqtt_password:
            settings.mqtt_password = _persistent_secret(settings, "mqtt-password")
        self.broker: Mosquitto | None = None
        if settings.manage_broker:
            self.broker = Mosquitto(
                settings.data_dir / "mosquitto",
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                office=settings.office,
            )
        self.ingestor = Ingestor(
            self.engine,
            settings.office,
            case_window=timedelta(minutes=settings.case_window_minutes),
        )
        self._on_result = on_result
        self.alerts = AlertEngine(
            self.engine,
            settings.office,
            rules=settings.alert_rules,
            publish=self._publish_alert,
            webhook_url=settings.alert_webhook_url or None,
        )
        self._stopping = threading.Event()
        self.ingest = self.new_ingest()
        self.app = create_app(
            self.engine, token=settings.api_token, office=settings.office, stats=self.stats
        )
        self.app.state.alerts = self.alerts
        self.livefeed: LiveFeed = self.app.state.livefeed  # GET /api/v1/ratings/stream
        self.app.state.on_registry_change = self.sync_broker_accounts
        self.app.state.device_extra = {  # where terminals reach the broker (not 0.0.0.0)
            "broker_host": settings.advertised_host or settings.mqtt_host,
            "broker_port": settings.mqtt_port,
        }
        self.app.state.prompt = self.prompt_desk
        self.app.state.qr = QrChannel.from_settings(self.engine, settings)  # /q/<desk token>
        self.rollouts = firmware.RolloutEngine(
            self.engine,
            office=settings.office,
            store=firmware.FirmwareStore(settings.data_dir / "firmware"),
            publish=self._publish_alert,
            base_url=lambda: firmware.firmware_base_url(settings),
            default_timeout_s=settings.rollout_timeout_s,
        )
        self.rollouts.recover()  # a rollout still "running" was cut short by a restart or crash
        self.app.state.rollouts = self.rollouts
        self.sync: SyncSender | None = None  # to the district, when it is configured
        if settings.district_url and settings.district_token:
            self.sync = SyncSender.from_settings(self.engine, settings, alerts=self.alerts)
        self.app.state.sync = self.sync
        self._server: uvicorn.Server | None = None
        self._api_thread: threading.Thread | None = None

    def new_ingest(self) -> MqttIngest:
        """A fresh MQTT subscriber (same client id, so it resumes the persistent session)."""
        st = self.settings
        ingest = MqttIngest(
            self.ingestor,
            host=st.mqtt_host,
            port=st.mqtt_port,
            user=st.mqtt_user,
            password=st.mqtt_password,
            max_batch=st.max_batch,
            on_result=self._after_commit,
        )
        if self.broker is not None:  # the hub's session is in the broker's database at once
            ingest.on_subscribed = self.broker.save
        return ingest

    def prompt_desk(self, desk_id: str) -> None:
        """A case was handed back at this desk: the terminal there invites a rating (LED)."""
        with Session(self.engine) as s:
            tids = s.exec(
                select(Terminal.id).where(Terminal.desk == desk_id, Terminal.active)
            ).all()
        window = self.settings.case_window_minutes * 60
        for tid in tids:
            cmd = protocol.encode_command(f"p-{secrets.token_hex(4)}", "prompt", {"window": window})
            self.ingest.publish(protocol.topic(self.settings.office, tid, "cmd"), cmd)

    def _publish_alert(self, topic: str, payload: bytes) -> None:
        self.ingest.publish(topic, payload)  # looked up per call: it can be replaced

    def _after_commit(self, res: Result) -> None:
        """Ingest thread, after the commit and the acks: alerts never delay an ack."""
        if res.stored:
            self.livefeed.publish([r.id for r in res.stored])  # wakes the live streams
        self.alerts.on_ratings(res.stored)
        for tid, status in res.statuses:
            self.alerts.on_status(tid, status)
        for kind, tid, msg in res.from_terminals:  # in arrival order: reply, then new version
            if kind == "reply":
                self.rollouts.on_reply(tid, msg)
            else:
                self.rollouts.on_status(tid, msg)
        for topic, reason in res.quarantined:
            self.alerts.on_quarantine(topic, reason)
        if self._on_result:
            self._on_result(res)

    def _alert_timer(self) -> None:
        while not self._stopping.wait(5):
            if (
                self.ingest.connected.is_set()
            ):  # cut off from the broker, every terminal looks silent
                self.alerts.tick()

    def stats(self) -> dict[str, Any]:
        return {
            "ingest": dict(self.ingestor.totals),
            "broker_connected": self.ingest.connected.is_set(),
            "alerts": self.alerts.stats(),
        }

    def sync_broker_accounts(self) -> None:
        """Write the broker's password and ACL files from the registry and reload it."""
        self.ingestor.reload_terminals()
        if self.broker is None:
            return
        with self.broker.lock():  # a technician's `sipas-hub broker ...` may be writing too
            terminals = registry.broker_accounts(self.engine, self.settings.office)
            self.broker.write_config(
                self.settings.mqtt_user, self.settings.mqtt_password, terminals
            )
            if self.broker.running:
                self.broker.reload()

    def add_terminal(self, **kw: Any) -> dict[str, Any]:
        _, device = registry.add_terminal(self.engine, office=self.settings.office, **kw)
        self.sync_broker_accounts()
        device.update(self.app.state.device_extra)
        return device

    def _warm_reports(self) -> None:
        """Bring the report rollups up to date when the hub starts: after an upgrade that changed
        their layout (a rebuild: 38 s per million ratings on the development machine,
        bench/README.md; a Raspberry Pi is slower) or days with the dashboard closed, the work is done now, not when someone opens a report
        (a report asked meanwhile waits for it, then answers from the rollups)."""
        ro = rollups_for(self.engine)
        try:
            st = ro.refresh()
            if st.seconds >= 1:
                log.info("report rollups brought up to date in %.1f s", st.seconds)
        except Exception:  # the first report tries again (and says what went wrong)
            log.exception("could not bring the report rollups up to date at start")
        finally:
            ro.close()

    def start(self, *, api: bool = True, wait: float = 10) -> None:
        if self.broker is not None:
            self.sync_broker_accounts()
            self.broker.start()
        self.ingest.start()
        threading.Thread(target=self._alert_timer, name="hub-alert-timer", daemon=True).start()
        threading.Thread(target=self._warm_reports, name="hub-report-warmup", daemon=True).start()
        if self.sync is not None:
            self.sync.start()
        if api:
            cfg = uvicorn.Config(
                self.app,
                host=self.settings.api_host,
                port=self.settings.api_port,
                log_level="warning",
                timeout_graceful_shutdown=2,
                access_log=False,
            )
            self._server = uvicorn.Server(cfg)
            self._api_thread = threading.Thread(
                target=self._server.run, name="hub-api", daemon=True
            )
            self._api_thread.start()
        deadline = time.monotonic() + wait
        while not self.ingest.connected.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the hub could not connect to Mosquitto at "
                    f"{self.settings.mqtt_host}:{self.settings.mqtt_port}"
                )
            time.sleep(0.05)
        while self._server is not None and not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the API did not start on {self.settings.api_host}:{self.settings.api_port}"
                )
            time.sleep(0.05)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}/api/v1"

    def stop(self) -> None:
        self._stopping.set()
        self.rollouts.stop()  # a running rollout ends as "interrupted"
        if self.sync is not None:
            self.sync.stop()  # after the request in flight; the watermark is in the database
        self.alerts.close()  # ends open event streams so the API stops at once
        self.livefeed.close()  # and the live ratings streams
        if self._server is not None:
            self._server.should_exit = True
            if self._api_thread:
                self._api_thread.join(timeout=10)
        self.ingest.stop()
        if self.broker is not None:
            self.broker.stop()
        self.engine.dispose()


def _persistent_secret(settings: Settings, name: str) -> str:
    """A secret generated once and kept (mode 0600) in the data directory."""
    path = settings.data_dir / name
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(value)
    return value

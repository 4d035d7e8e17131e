// The talk page: a Realtime API client. Hold to record (PCM16 at 24 kHz), let go to commit and
// ask for a response; the answer's audio is queued to play as its pieces arrive.
"use strict";
const RATE = 24000;
const $ = (id) => document.getElementById(id);
// what the page has done, for people reading the screen and for tests reading the page
const talk = window.talk = { heard: [], answers: [], audioBytes: 0, turns: [], errors: [] };
let ws = null, ctx = null, mic = null, nodes = [], talking = false, pressing = null;
let playEnd = 0, answer = null, responding = false;

$("key").value = sessionStorage.getItem("confab-key") || "";
$("key").addEventListener("change", () => sessionStorage.setItem("confab-key", $("key").value.trim()));

function status(text) { $("status").textContent = text; }

function line(who, text) {
  const p = document.createElement("p");
  p.className = who;
  const b = document.createElement("b");
  b.textContent = who === "you" ? "You: " : "Confab: ";
  const span = document.createElement("span");
  span.textContent = text;
  p.append(b, span);
  $("log").append(p);
  p.scrollIntoView({ block: "end" });
  return span;
}

function send(event) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(event)); }

function connect() {
  if (ws && ws.readyState === WebSocket.OPEN) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const key = $("key").value.trim();
    sessionStorage.setItem("confab-key", key);
    const protocols = ["realtime"];
    if (key) protocols.push("openai-insecure-api-key." + key);
    const sock = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/realtime", protocols);
    sock.onopen = () => {
      ws = sock;
      send({ type: "session.update", session: { type: "realtime", audio: {
        input: { format: { type: "audio/pcm", rate: RATE }, turn_detection: null, transcription: { model: "whisper-1" } },
        output: { format: { type: "audio/pcm", rate: RATE } } } } });
      resolve();
    };
    sock.onerror = () => reject(new Error("Could not connect to Confab. Is the API key right?"));
    sock.onclose = () => { if (ws === sock) { ws = null; status("Disconnected; press again to reconnect."); } };
    sock.onmessage = (e) => onEvent(JSON.parse(e.data));
  });
}

async function audioContext() {
  if (!ctx) {
    ctx = new AudioContext({ sampleRate: RATE });
    await ctx.audioWorklet.addModule("/talk/talk-mic.js");
  }
  if (ctx.state === "suspended") await ctx.resume();
}

function b64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function playing() { return answer && answer.start !== null && ctx && ctx.currentTime < playEnd; }

// Pressing while the answer plays: stop it, and tell Confab how much was heard.
function interrupt() {
  if (!answer || answer.cut || !(responding || playing())) return;
  const heard = answer.start === null ? 0 : Math.max(0, Math.min(answer.ms, (ctx.currentTime - answer.start) * 1000));
  answer.cut = true;
  answer.sources.forEach((s) => { try { s.stop(); } catch (e) { /* not started */ } });
  playEnd = 0;
  if (responding) send({ type: "response.cancel" });
  if (answer.item) send({ type: "conversation.item.truncate", item_id: answer.item, content_index: 0, audio_end_ms: Math.floor(heard) });
  if (answer.span) answer.span.parentNode.classList.add("cut");
}

async function press() {
  talking = true;
  $("talk").classList.add("listening");
  try {
    await audioContext();
    interrupt();
    await connect();
    mic = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    const source = ctx.createMediaStreamSource(mic);
    const worklet = new AudioWorkletNode(ctx, "confab-mic");
    const mute = ctx.createGain();
    mute.gain.value = 0;
    worklet.port.onmessage = (e) => { if (talking) send({ type: "input_audio_buffer.append", audio: b64(e.data) }); };
    source.connect(worklet).connect(mute).connect(ctx.destination);
    nodes = [source, worklet, mute];
    status("Listening… let go to send.");
  } catch (e) {
    talking = false;
    status(e.message || String(e));
    talk.errors.push(e.message || String(e));
  }
}

async function release() {
  const wasTalking = talking;
  await pressing;
  $("talk").classList.remove("listening");
  if (!wasTalking || !talking) return;
  talking = false;
  nodes.forEach((n) => n.disconnect());
  if (mic) mic.getTracks().forEach((t) => t.stop());
  mic = null;
  talk.turns.push({ released: performance.now(), firstAudio: null });
  send({ type: "input_audio_buffer.commit" });
  send({ type: "response.create" });
  status("Thinking…");
}

function play(data) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const buffer = ctx.createBuffer(1, pcm.length, RATE);
  const out = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  const at = Math.max(ctx.currentTime + 0.05, playEnd);
  src.start(at);
  playEnd = at + buffer.duration;
  if (answer.start === null) answer.start = at;
  answer.ms += buffer.duration * 1000;
  answer.sources.push(src);
  talk.audioBytes += bytes.length;
  const turn = talk.turns[talk.turns.length - 1];
  if (turn && turn.firstAudio === null) turn.firstAudio = performance.now();
}

function onEvent(ev) {
  switch (ev.type) {
    case "conversation.item.input_audio_transcription.completed":
      talk.heard.push(ev.transcript);
      line("you", ev.transcript);
      break;
    case "conversation.item.input_audio_transcription.failed":
      line("you", "(" + ev.error.message + ")");
      break;
    case "response.created":
      responding = true;
      answer = { item: null, span: null, start: null, ms: 0, sources: [], cut: false, text: "" };
      break;
    case "response.output_item.added":
      if (answer) { answer.item = ev.item.id; answer.span = line("confab", ""); }
      break;
    case "response.output_audio_transcript.delta":
      if (answer && !answer.cut) { answer.text += ev.delta; answer.span.textContent = answer.text; }
      break;
    case "response.output_audio.delta":
      if (answer && !answer.cut) play(ev.delta);
      break;
    case "response.done":
      responding = false;
      if (answer) talk.answers.push(answer.text);
      if (ev.response.status === "completed") status("Hold to talk again.");
      else if (ev.response.status === "cancelled") status("Interrupted. Listening to you.");
      break;
    case "error":
      talk.errors.push(ev.error.message);
      status(ev.error.message);
      break;
  }
}

const button = $("talk");
function down(e) { e.preventDefault(); if (!talking) pressing = press(); }
function up() { if (talking || pressing) release(); }
button.addEventListener("pointerdown", down);
button.addEventListener("pointerup", up);
button.addEventListener("pointerleave", up);
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && !e.repeat && e.target.tagName !== "INPUT") down(e);
});
document.addEventListener("keyup", (e) => { if (e.code === "Space" && e.target.tagName !== "INPUT") up(); });

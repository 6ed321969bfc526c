"use strict";
// The two-alternative forced-choice page. The server sends a pair as a ticket and
// three image URLs; the page never learns which codec made which image. A vote
// sends back the ticket and "a" or "b". `document.body.dataset.state` says where the
// page is (instructions, loading, ready, voting, error) so tests can wait on it.

const studyId = decodeURIComponent(location.pathname.split("/")[2] || "");
const body = document.body;
const $ = (id) => document.getElementById(id);
const images = { original: $("original"), a: $("image-a"), b: $("image-b") };
const voteButtons = [$("vote-a"), $("vote-b")];
let pair = null;
let votes = 0;
let zoomed = false;

// An anonymous id per browser, so votes from one person can be grouped later.
function raterId() {
  const key = "mirage-study-rater";
  try {
    let id = localStorage.getItem(key);
    if (!id) {
      const bytes = crypto.getRandomValues(new Uint8Array(8));
      id = "r-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      localStorage.setItem(key, id);
    }
    return id;
  } catch {
    return undefined; // storage blocked: vote anonymously
  }
}
const rater = raterId();

function setState(state, message = "") {
  body.dataset.state = state;
  $("status").textContent = message;
  const canVote = state === "ready";
  for (const b of voteButtons) b.disabled = !canVote;
}

function loadImage(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

async function nextPair() {
  setState("loading", "Loading the next pair…");
  setZoom(false);
  try {
    const response = await fetch(`/api/studies/${encodeURIComponent(studyId)}/pair`, { cache: "no-store" });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    pair = data;
    // Votes stay off until all three images are on screen.
    await Promise.all([
      loadImage(images.original, pair.original),
      loadImage(images.a, pair.a),
      loadImage(images.b, pair.b),
    ]);
    setState("ready", `Image ${pair.image}`);
  } catch (e) {
    setState("error", `${e.message}. Reload the page to try again.`);
  }
}

async function vote(choice) {
  if (body.dataset.state !== "ready") return;
  setState("voting", "Saving…");
  try {
    const response = await fetch(`/api/studies/${encodeURIComponent(studyId)}/votes`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ticket: pair.ticket, choice, rater }),
    });
    // 409: this ticket was already counted (a double submit); move on all the same.
    // 410: the pair was left open past the ticket's lifetime; it cannot count, so
    // show a fresh pair.
    if (response.status === 410) {
      await nextPair();
      $("status").textContent = "That pair had expired, so the vote was not counted; here is a new one.";
      return;
    }
    if (!response.ok && response.status !== 409) {
      const data = await response.json().catch(() => ({}));
      throw new Error(data.error || response.statusText);
    }
    if (response.ok) {
      votes += 1;
      body.dataset.votes = String(votes);
      $("progress").textContent = `${votes} vote${votes === 1 ? "" : "s"}`;
    }
    await nextPair();
  } catch (e) {
    setState("error", `Your vote was not saved: ${e.message}. Reload the page to continue.`);
  }
}

function setZoom(on, x, y) {
  zoomed = on;
  body.classList.toggle("zoomed", on);
  if (x !== undefined) {
    body.style.setProperty("--zoom-x", `${x}%`);
    body.style.setProperty("--zoom-y", `${y}%`);
  }
}

// Clicking any image zooms all three into the same region, so A, B and the original
// can be compared detail for detail; clicking again zooms out.
for (const img of Object.values(images)) {
  img.parentElement.addEventListener("click", (event) => {
    if (zoomed) return setZoom(false);
    const box = img.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * 100;
    const y = ((event.clientY - box.top) / box.height) * 100;
    setZoom(true, Math.min(100, Math.max(0, x)), Math.min(100, Math.max(0, y)));
  });
}

function showInstructions(on) {
  body.classList.toggle("instructions", on);
}

function toggleOriginal() {
  body.classList.toggle("hide-original");
}

$("vote-a").addEventListener("click", () => vote("a"));
$("vote-b").addEventListener("click", () => vote("b"));
$("toggle-original").addEventListener("click", toggleOriginal);
$("toggle-zoom").addEventListener("click", () => setZoom(!zoomed));
$("show-help").addEventListener("click", () => showInstructions(true));
$("start").addEventListener("click", () => showInstructions(false));

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (body.classList.contains("instructions")) {
    if (event.key === "Enter" || event.key === "Escape" || event.key.toLowerCase() === "h") {
      showInstructions(false);
      event.preventDefault();
    }
    return;
  }
  switch (event.key) {
    case "ArrowLeft": case "a": case "A": vote("a"); break;
    case "ArrowRight": case "b": case "B": vote("b"); break;
    case "o": case "O": toggleOriginal(); break;
    case "z": case "Z": setZoom(!zoomed); break;
    case "Escape": setZoom(false); break;
    case "h": case "H": case "?": showInstructions(true); break;
    default: return;
  }
  event.preventDefault();
});

showInstructions(true);
nextPair();

"use strict";
// Lists the studies with links to their pages and results.
(async () => {
  const list = document.getElementById("studies");
  try {
    const response = await fetch("/api/studies");
    const studies = await response.json();
    list.textContent = "";
    if (studies.length === 0) list.textContent = "No studies yet.";
    for (const s of studies) {
      const item = document.createElement("li");
      const page = document.createElement("a");
      page.href = `/study/${encodeURIComponent(s.id)}`;
      page.textContent = s.id;
      const results = document.createElement("a");
      results.href = `/study/${encodeURIComponent(s.id)}/results`;
      results.textContent = "results";
      item.append(page, ` — ${s.images} images, ${s.pairs} pairs, ${s.votes} votes — `, results);
      list.append(item);
    }
  } catch (e) {
    list.textContent = `Could not load the studies: ${e}`;
  }
})();

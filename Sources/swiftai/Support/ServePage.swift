/// `swiftai serve`'s page: drop or pick images, see each with its top predictions (fastbook's classifier app).
/// Self-contained: no external scripts, styles or fonts.
let classifierPage = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>SwiftAI classifier</title>
    <style>
      body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 52rem; padding: 0 1rem; color: #222; }
      h1 { font-size: 1.4rem; }
      #drop { border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer; }
      #drop.over { background: #eef5ff; border-color: #36c; }
      .result { display: flex; gap: 1rem; align-items: flex-start; margin: 1rem 0; padding: .75rem;
                border: 1px solid #ddd; border-radius: 8px; }
      .result img { width: 128px; height: 128px; object-fit: contain; background: #f4f4f4; }
      .label { font-weight: 600; font-size: 1.1rem; }
      .error { color: #b00; }
      .bar { height: .6rem; background: #36c; border-radius: 3px; }
      .row { display: grid; grid-template-columns: 10rem 12rem 4rem; gap: .5rem; align-items: center;
             font-size: .9rem; }
    </style>
    </head>
    <body>
    <h1>SwiftAI classifier</h1>
    <p>Drop images here or pick them; each is sent to <code>POST /predict</code>.</p>
    <div id="drop">Drop images, or click to choose<br>
      <input id="files" type="file" accept="image/*" multiple>
    </div>
    <div id="results"></div>
    <script>
    const results = document.getElementById('results');
    const drop = document.getElementById('drop');
    const input = document.getElementById('files');
    function text(tag, cls, value) {
      const e = document.createElement(tag); if (cls) e.className = cls; e.textContent = value; return e;
    }
    async function classify(file) {
      const card = document.createElement('div');
      card.className = 'result';
      card.dataset.file = file.name;
      const img = document.createElement('img');
      img.src = URL.createObjectURL(file);
      img.alt = file.name;
      const info = document.createElement('div');
      info.appendChild(text('div', 'name', file.name));
      card.append(img, info);
      results.prepend(card);
      try {
        const response = await fetch('/predict', {
          method: 'POST', body: file, headers: { 'Content-Type': file.type || 'application/octet-stream' } });
        const answer = await response.json();
        if (!response.ok) { info.appendChild(text('div', 'error', answer.error || response.statusText)); return; }
        info.appendChild(text('div', 'label', answer.label));
        for (const [name, p] of Object.entries(answer.probs).slice(0, 3)) {
          const row = document.createElement('div');
          row.className = 'row';
          const bar = document.createElement('div');
          bar.className = 'bar';
          bar.style.width = (100 * p).toFixed(1) + '%';
          row.append(text('span', 'class', name), bar, text('span', 'prob', (100 * p).toFixed(1) + '%'));
          info.appendChild(row);
        }
      } catch (e) {
        info.appendChild(text('div', 'error', String(e)));
      }
    }
    function handle(files) { for (const f of files) classify(f); }
    input.addEventListener('change', () => handle(input.files));
    drop.addEventListener('click', e => { if (e.target !== input) input.click(); });
    drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', e => {
      e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files);
    });
    </script>
    </body>
    </html>
    """#
